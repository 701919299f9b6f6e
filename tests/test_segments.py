from zhaopian.search.fusion import fuse
from zhaopian.search.library import FusionConfig
from zhaopian.search.segments import merge_hits
from zhaopian.search.types import Hit, Segment


def hit(media, start, score, length=1.0):
    return Hit(media, start, start + length, score, start)


def test_adjacent_matching_clips_merge_into_one_segment():
    hits = [hit(1, 3, 0.9), hit(1, 4, 0.88), hit(1, 5, 0.87), hit(1, 9, 0.86), hit(2, 0, 0.5)]
    segs = merge_hits(hits, "visual", max_gap=1.0, spread=0.25)
    assert [(s.media_id, s.start, s.end) for s in segs] == [(1, 3, 6), (1, 9, 10), (2, 0, 1)]
    assert segs[0].score == 0.9  # the best clip's score
    assert segs[0].thumbnail_time == 3
    assert segs[0].routes == {"visual": 0.9}


def test_weak_neighbour_does_not_join():
    hits = [hit(1, 0, 0.9), hit(1, 1, 0.2), hit(1, 2, 0.85)]
    segs = merge_hits(hits, "visual", spread=0.25)
    assert [(s.start, s.end) for s in segs] == [(0, 1), (2, 3), (1, 2)]


def test_gap_limits_merging():
    hits = [hit(1, 0, 0.9), hit(1, 3, 0.9)]
    assert len(merge_hits(hits, "visual", max_gap=1.0)) == 2
    assert len(merge_hits(hits, "visual", max_gap=2.0)) == 1


def test_fusion_single_route_passes_through_and_two_routes_merge_overlaps():
    a = [Segment(media_id=1, start=0, end=3, score=0.9, thumbnail_time=1),
         Segment(media_id=2, start=0, end=2, score=0.5, thumbnail_time=0)]
    assert fuse({"visual": a}, FusionConfig()) == a
    b = [Segment(media_id=2, start=1, end=4, score=7.0, thumbnail_time=2)]
    fused = fuse({"visual": a, "ocr": b}, FusionConfig(method="rrf"))
    assert fused[0].media_id == 2 and fused[0].start == 0 and fused[0].end == 4
    assert fused[0].routes == {"visual": 0.5, "ocr": 7.0}
    assert fused[1].routes == {"visual": 0.9}
