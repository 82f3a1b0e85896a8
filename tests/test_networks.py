import torch
from monai.networks.nets import UNet

from brainseg3d.networks import SliceWise25D, neighbour_stack, volume_network


def _net(k=1):
    torch.manual_seed(0)
    return UNet(2, 4 * (2 * k + 1), 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1).eval()


def test_slicewise_equals_per_slice_2d():
    net = _net()
    x = torch.randn(1, 4, 20, 24, 7)
    wrapped = SliceWise25D(net, k=1, slice_batch=3, divisible=4, mask_background=False).eval()
    with torch.no_grad():
        y = wrapped(x)
        ref = net(neighbour_stack(x[0], 1)).permute(1, 2, 3, 0)[None]
    assert y.shape == (1, 3, 20, 24, 7)
    assert torch.allclose(y, ref, atol=1e-5)


def test_padding_background_mask_and_torchscript():
    x = torch.randn(2, 4, 19, 23, 5)
    x[:, :, :3] = 0  # background rows
    wrapped = SliceWise25D(_net(), k=1).eval()
    with torch.no_grad():
        y = wrapped(x)
        ts = torch.jit.script(wrapped)(x)
    assert y.shape == (2, 3, 19, 23, 5)
    assert bool((y[:, :, :3] == -20).all()) and bool((y[:, :, 3:] != -20).any())
    assert torch.allclose(ts, y, atol=1e-5)


def test_views_slice_along_their_axis_and_average():
    net = _net()
    x = torch.randn(1, 4, 12, 16, 20)
    x[:, :, :2] = 0  # background on X 0..1: masked in every view
    with torch.no_grad():
        axial = SliceWise25D(net, k=1, divisible=4).eval()(x)
        views = {}
        for view, dim in (("coronal", 3), ("sagittal", 2)):
            views[view] = SliceWise25D(net, k=1, divisible=4, views=view).eval()(x)
            # the coronal / sagittal network is the axial one on the volume turned so that Y / X is last
            ref = SliceWise25D(net, k=1, divisible=4).eval()(x.movedim(dim, 4)).movedim(4, dim)
            assert views[view].shape == x.shape[:1] + (3,) + x.shape[2:]
            assert torch.allclose(views[view], ref, atol=1e-5)
            assert not torch.allclose(views[view], axial, atol=1e-3)  # another view, another answer
        three = SliceWise25D(net, k=1, divisible=4, views=["axial", "coronal", "sagittal"]).eval()
        y = three(x)
        mean = (torch.sigmoid(axial) + torch.sigmoid(views["coronal"]) + torch.sigmoid(views["sagittal"])) / 3
        assert torch.allclose(torch.sigmoid(y), mean, atol=1e-5)
        assert bool((y[:, :, :2] < -10).all())  # the background stays out in the mean
        assert torch.allclose(torch.jit.script(three)(x), y, atol=1e-5)
    for bad in ("transverse", [], ["axial", "axial"]):
        try:
            SliceWise25D(net, views=bad)
        except ValueError as e:
            assert "views" in str(e)
        else:
            raise AssertionError(f"views={bad!r} was accepted")


def test_bf16_close_to_fp32():
    x = torch.randn(1, 4, 32, 32, 4)
    net = _net()
    with torch.no_grad():
        a = volume_network(net, "2.5d", k=1, bf16=False)(x)
        b = volume_network(net, "2.5d", k=1, bf16=True)(x)
    assert b.dtype == torch.float32
    assert ((a > 0) == (b > 0)).float().mean() > 0.97


def test_widened_network_computes_what_the_k1_network_did(tmp_path):
    """A K = 1 model's weights in a K = 2 network (zero weights on the two new outer slices)
    give the same output on the K = 2 neighbour stack as the K = 1 model on its own."""
    from brainseg3d.networks import load_initial_weights

    k1, k2 = _net(1), _net(2)
    with torch.no_grad():
        for p in k2.parameters():
            p.add_(1.0)  # whatever K = 2 held before is replaced
    torch.save({f"net.{k}": v for k, v in k1.state_dict().items()}, tmp_path / "fold3.pt")  # saved through Autocast
    load_initial_weights(k2, tmp_path / "fold{fold}.pt", fold=3)
    first = k2.state_dict()["model.0.conv.unit0.conv.weight"]
    assert first.shape[1] == 20 and bool((first[:, :4] == 0).all()) and bool((first[:, 16:] == 0).all())
    x = torch.randn(4, 24, 24, 6)
    with torch.no_grad():
        assert torch.allclose(k1(neighbour_stack(x, 1)), k2(neighbour_stack(x, 2)), atol=1e-5)


def test_initial_weights_errors_name_the_problem(tmp_path):
    import pytest

    from brainseg3d.networks import load_initial_weights, widen_neighbour_channels

    with pytest.raises(FileNotFoundError, match="fold2.pt"):
        load_initial_weights(_net(1), tmp_path / "fold{fold}.pt", fold=2)
    torch.save(_net(1).state_dict(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="no fold"):
        load_initial_weights(_net(1), str(tmp_path / "m{fold}.pt"))
    other = UNet(2, 12, 3, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1)  # deeper: does not fit
    with pytest.raises(ValueError, match="m.pt: the weights do not fit"):
        load_initial_weights(other, tmp_path / "m.pt")
    wide = UNet(2, 12, 3, channels=(12, 16, 32), strides=(2, 2), num_res_units=1)  # output channels differ: not a widening
    with pytest.raises(ValueError, match="cannot widen"):
        widen_neighbour_channels(_net(1).state_dict(), wide.state_dict())
    assert load_initial_weights(_net(1), None) is not None  # no weights: the network as built
