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


def test_bf16_close_to_fp32():
    x = torch.randn(1, 4, 32, 32, 4)
    net = _net()
    with torch.no_grad():
        a = volume_network(net, "2.5d", k=1, bf16=False)(x)
        b = volume_network(net, "2.5d", k=1, bf16=True)(x)
    assert b.dtype == torch.float32
    assert ((a > 0) == (b > 0)).float().mean() > 0.97
