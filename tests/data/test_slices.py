import pytest
import torch

from brainseg3d.data.slices import SliceDataset, VolumeCache
from brainseg3d.networks import neighbour_stack


def test_neighbour_order_and_edge_replication():
    vol = torch.arange(2 * 5, dtype=torch.float32).reshape(2, 1, 1, 5)  # channel c, slice z: value c*5+z
    out = neighbour_stack(vol, 1)
    assert out.shape == (5, 6, 1, 1)
    # slice 0: [z-1 -> 0 (replicated): c0, c1, z: c0, c1, z+1: c0, c1]
    assert out[0, :, 0, 0].tolist() == [0, 5, 0, 5, 1, 6]
    assert out[2, :, 0, 0].tolist() == [1, 6, 2, 7, 3, 8]
    assert out[4, :, 0, 0].tolist() == [3, 8, 4, 9, 4, 9]
    assert torch.equal(neighbour_stack(vol, 0)[:, :, 0, 0], vol[:, 0, 0].T)
    assert torch.equal(neighbour_stack(vol, 2, torch.tensor([3]))[0], neighbour_stack(vol, 2)[3])


class _Cache(VolumeCache):
    def __init__(self, images, labels):
        self.items, self.images, self.labels = [{}] * len(images), images, labels


def _volumes():
    img = torch.zeros(4, 8, 8, 10)
    img[:, 2:6, 2:6, 1:9] = 1.0  # brain on slices 1..8
    lab = torch.zeros(3, 8, 8, 10, dtype=torch.uint8)
    lab[0, 3:5, 3:5, 3:5] = 1  # tumour on slices 3, 4
    return img, lab


def test_slice_dataset_skips_empty_and_balances():
    img, lab = _volumes()
    ds = SliceDataset(_Cache([img], [lab]), k=1, tumour_ratio=0.5, seed=0)
    assert sorted(z for _, _, z in ds.tumour) == [3, 4]
    assert sorted(z for _, _, z in ds.background) == [1, 2, 5, 6, 7, 8]  # slices 0 and 9 have no brain
    assert len(ds) == 4  # 2 tumour + 2 tumour-free for a ratio of 0.5
    item = ds[0]
    assert item["image"].shape == (12, 8, 8) and item["label"].shape == (3, 8, 8)
    ds.resample(1)
    draws = {tuple(ds.index)}
    for e in range(2, 8):
        ds.resample(e)
        draws.add(tuple(ds.index))
    assert len(draws) > 1  # a new draw of tumour-free slices per epoch
    ds_all = SliceDataset(_Cache([img], [lab]), k=0, tumour_ratio=None)
    assert len(ds_all) == 8 and ds_all[0]["image"].shape == (4, 8, 8)


def test_case_balance_draws_as_many_tumour_slices_from_each_case():
    img, small = _volumes()  # tumour on 2 slices
    large = torch.zeros_like(small)
    large[0, 3:5, 3:5, 1:9] = 1  # tumour on 8 slices
    plain = SliceDataset(_Cache([img, img], [small, large]), k=0, tumour_ratio=0.5, seed=0)
    balanced = SliceDataset(_Cache([img, img], [small, large]), k=0, tumour_ratio=0.5, seed=0, case_balance=True)
    assert balanced.background == plain.background and len(balanced) == len(plain)  # same epoch length
    for epoch in range(3):
        plain.resample(epoch)
        balanced.resample(epoch)
        assert plain.index == plain.tumour + plain.index[len(plain.tumour):]  # off: every tumour slice once
        tumour = balanced.index[: len(balanced.tumour)]
        per_case = [sum(v == case for v, _, _ in tumour) for case in (0, 1)]
        assert per_case == [5, 5]  # 10 tumour slices, 5 from each case: the small one's 2 drawn again
        assert {z for v, _, z in tumour if v == 0} == {3, 4}  # only the case's own tumour slices
        assert all(lab_z for lab_z in (balanced[i]["label"].sum() > 0 for i in range(len(tumour))))
    balanced.resample(7)
    first = list(balanced.index)
    balanced.resample(7)
    assert balanced.index == first  # deterministic per epoch


def test_source_weights_draw_a_source_s_cases_more_often():
    img, small = _volumes()  # tumour on 2 slices
    large = torch.zeros_like(small)
    large[0, 3:5, 3:5, 1:9] = 1  # tumour on 8 slices
    cache = _Cache([img, img, img], [small, large, small])
    sources = ["adult", "africa", "africa"]
    plain = SliceDataset(cache, k=0, tumour_ratio=0.5, seed=0, sources=sources)
    weighted = SliceDataset(cache, k=0, tumour_ratio=0.5, seed=0, sources=sources, source_weights={"adult": 6})
    assert weighted.background == plain.background and len(weighted) == len(plain)  # same epoch length
    for epoch in range(3):
        weighted.resample(epoch)
        tumour = weighted.index[: len(weighted.tumour)]
        # 12 tumour slices; shares 2 * 6 : 8 : 2 = 12 : 8 : 2 of 22, scaled to 12: 6.5 -> 7 (rounded), 4.4 -> 4, 1.1 -> 1
        assert [sum(v == case for v, _, _ in tumour) for case in range(3)] == [round(12 * 12 / 22), round(8 * 12 / 22), round(2 * 12 / 22)]
        assert {z for v, _, z in tumour if v == 0} == {3, 4}  # the adult case's 2 slices drawn again, nothing else
    balanced = SliceDataset(cache, k=0, tumour_ratio=0.5, seed=0, sources=sources, source_weights={"adult": 2}, case_balance=True)
    tumour = balanced.index[: len(balanced.tumour)]
    assert [sum(v == case for v, _, _ in tumour) for case in range(3)] == [6, 3, 3]  # equal shares 4 : 4 : 4, adult doubled
    same = SliceDataset(cache, k=0, tumour_ratio=0.5, seed=0, sources=sources, source_weights={"adult": 1, "africa": 1})
    assert sorted(same.index[: len(same.tumour)]) == sorted(plain.tumour)  # equal weights: every tumour slice once
    with pytest.raises(ValueError, match="no volume has"):
        SliceDataset(cache, k=0, sources=sources, source_weights={"adlut": 2})
    with pytest.raises(ValueError, match="sources"):
        SliceDataset(cache, k=0, source_weights={"adult": 2})
    with pytest.raises(ValueError, match="negative"):
        SliceDataset(cache, k=0, sources=sources, source_weights={"adult": -1})


def test_slice_matches_volume_neighbours():
    img, lab = _volumes()
    img = img * torch.arange(10).float()  # make slices distinguishable
    ds = SliceDataset(_Cache([img], [lab]), k=2, tumour_ratio=None)
    v, _, z = ds.index[0]
    assert torch.equal(ds[0]["image"], neighbour_stack(img, 2)[z])
    assert torch.equal(ds[0]["label"], lab[..., z].float())


def test_coronal_and_sagittal_slices_read_along_their_axis():
    img, lab = _volumes()
    img = img * (1 + torch.arange(8).float())[None, None, :, None] * (1 + 10 * torch.arange(8).float())[None, :, None, None]
    for views, dim in (("coronal", 2), ("sagittal", 1)):
        ds = SliceDataset(_Cache([img], [lab]), k=1, tumour_ratio=None, views=views)
        assert sorted(z for _, _, z in ds.tumour) == [3, 4]  # the tumour spans 3..4 on X and Y too
        assert sorted(z for _, _, z in ds.background) == [2, 5]  # brain on 2..5 in-plane
        for i, (_, d, z) in enumerate(ds.index):
            turned = img.movedim(dim, 3)
            assert d == dim and ds[i]["image"].shape == (12, 8, 10)
            assert torch.equal(ds[i]["image"], neighbour_stack(turned, 1)[z])
            assert torch.equal(ds[i]["label"], lab.movedim(dim, 3)[..., z].float())


def test_several_views_draw_from_each():
    img, lab = _volumes()
    ds = SliceDataset(_Cache([img], [lab]), k=0, tumour_ratio=None, views=["axial", "coronal", "sagittal"])
    assert len(ds) == 8 + 4 + 4  # brain slices on Z, Y and X
    assert {d for _, d, _ in ds.index} == {1, 2, 3}
    for bad in ("transverse", [], ["axial", "axial"]):
        try:
            SliceDataset(_Cache([img], [lab]), views=bad)
        except ValueError as e:
            assert "views" in str(e)
        else:
            raise AssertionError(f"views={bad!r} was accepted")
