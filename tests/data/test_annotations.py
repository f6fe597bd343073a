"""VOC-style XML parsing (safe against entity attacks) and box cleaning."""

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vgglocal.data.annotations import (
    CLIPPED,
    DROPPED,
    OK,
    box_problems,
    clean_boxes,
    parse_voc_xml,
    read_xml_boxes,
)
from vgglocal.data.errors import BadAnnotationError

XML = """<annotation>
  <folder>n01440764</folder><filename>n01440764_18</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <object><name>n01440764</name><difficult>0</difficult>
    <bndbox><xmin>60</xmin><ymin>45</ymin><xmax>405</xmax><ymax>333</ymax></bndbox></object>
  <object><name>n01443537</name><difficult>1</difficult>
    <bndbox><xmin>0</xmin><ymin>10.5</ymin><xmax>499</xmax><ymax>374</ymax></bndbox></object>
</annotation>"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><filename>&lol9;</filename></annotation>"""

EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><filename>&xxe;</filename></annotation>"""


def test_parse_ilsvrc_xml_exact(tmp_path):
    (tmp_path / "a.xml").write_text(XML)
    ann = parse_voc_xml(tmp_path / "a.xml")
    assert ann.filename == "n01440764_18" and ann.size == (375, 500)
    assert ann.names == ["n01440764", "n01443537"]
    np.testing.assert_array_equal(ann.boxes, np.array([[60, 45, 405, 333], [0, 10.5, 499, 374]], np.float32))
    assert ann.difficult.tolist() == [False, True] and ann.issues == []


@pytest.mark.parametrize("text, words", [(BILLION_LAUGHS, "entit"), (EXTERNAL, "entit")])
def test_malicious_xml_rejected_fast_with_one_line(tmp_path, text, words):
    path = tmp_path / "evil.xml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(BadAnnotationError) as e:
        parse_voc_xml(path)
    assert time.perf_counter() - start < 1.0  # rejected at the declaration, nothing expanded
    msg = str(e.value)
    assert msg.startswith(str(path)) and words in msg and "rejected" in msg and "\n" not in msg


def test_malformed_and_wrong_root_xml(tmp_path):
    (tmp_path / "bad.xml").write_text("<annotation><object>")
    with pytest.raises(BadAnnotationError, match=r"bad\.xml: malformed XML"):
        parse_voc_xml(tmp_path / "bad.xml")
    (tmp_path / "root.xml").write_text("<html/>")
    with pytest.raises(BadAnnotationError, match="expected <annotation>"):
        parse_voc_xml(tmp_path / "root.xml")


def test_objects_without_numeric_box_are_skipped_and_reported(tmp_path):
    (tmp_path / "a.xml").write_text(
        "<annotation><object><name>x</name></object>"
        "<object><name>y</name><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax></bndbox></object>"
        "<object><name>z</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>6</ymax></bndbox></object></annotation>")
    ann = parse_voc_xml(tmp_path / "a.xml")
    assert ann.names == ["z"] and ann.size == (0, 0) and len(ann.issues) == 2


def test_read_xml_boxes_unknown_class_and_clipping(tmp_path):
    (tmp_path / "a.xml").write_text(XML.replace("<xmax>405</xmax>", "<xmax>520</xmax>"))
    problems = []
    ib = read_xml_boxes(str(tmp_path / "a.xml"), {"n01440764": 0}, problems)
    np.testing.assert_array_equal(ib.boxes, [[60, 45, 500, 333]])  # clipped to the 500-wide image
    assert ib.labels.tolist() == [0] and ib.first_label == 0 and ib.size == (375, 500)
    kinds = sorted(p.kind for p in problems)
    assert kinds == ["clipped-box", "unknown-class"]
    assert any("n01443537" in p.message for p in problems)


def test_clean_boxes_rules():
    boxes = np.array([
        [10, 10, 20, 20],    # fine
        [20, 10, 10, 20],    # x1 > x2: dropped (never swapped)
        [-5, 10, 20, 60],    # partly outside: clipped
        [60, 60, 70, 70],    # entirely outside a 50x50 image: dropped
        [10, 10, 10, 20],    # empty: dropped
        [np.nan, 1, 2, 3],   # not a number: dropped
        [0, 0, 50, 50],      # exactly the image: fine
    ], np.float32)
    cleaned, status = clean_boxes(boxes, (50, 50))
    assert status.tolist() == [OK, DROPPED, CLIPPED, DROPPED, DROPPED, DROPPED, OK]
    np.testing.assert_array_equal(cleaned[2], [0, 10, 20, 50])
    problems = box_problems("f.xml", boxes, cleaned, status, (50, 50))
    assert len(problems) == 5 and all(p.file == "f.xml" and "\n" not in str(p) for p in problems)
    assert "clipped to [0, 10, 20, 50]" in problems[1].message and "dropped" in problems[0].message
    assert "non-numeric" in problems[4].message and "lies entirely outside the 50x50 image" in problems[2].message


def test_clean_boxes_unknown_size_enforces_only_zero():
    cleaned, status = clean_boxes(np.array([[-3, 2, 900, 700], [5, 5, 4, 9]], np.float32), (0, 0))
    assert status.tolist() == [CLIPPED, DROPPED]
    np.testing.assert_array_equal(cleaned[0], [0, 2, 900, 700])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.floats(-100, 200, allow_nan=False)] * 4), min_size=1, max_size=8),
       st.integers(1, 120), st.integers(1, 120))
def test_kept_boxes_are_inside_and_non_empty(raw, h, w):
    boxes = np.array(raw, np.float32)
    cleaned, status = clean_boxes(boxes, (h, w))
    kept = cleaned[status != DROPPED]
    assert (kept[:, 0] >= 0).all() and (kept[:, 2] <= w).all() and (kept[:, 1] >= 0).all() and (kept[:, 3] <= h).all()
    assert (kept[:, 2] > kept[:, 0]).all() and (kept[:, 3] > kept[:, 1]).all()
    np.testing.assert_array_equal(cleaned[status == OK], boxes[status == OK])
