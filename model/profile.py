"""Parameter and multiply-add counts, both our true ones and the paper's (thop) way."""
from __future__ import annotations

import torch
import torch.nn as nn

from .bifpn import is_fusion_weight
from .dcn import DeformableConv2d

COMPONENTS = ("backbone", "attention", "bifpn", "context", "heads", "other")


def component_of(param_name: str) -> str:
    """Which part of the network a parameter belongs to (from its module path).

    `bifpn` holds the feature pyramid (BiFPN, RetinaFace's FPN, or V2 Ultra's lateral
    projections); `context` the SSH modules and their shuffle blocks, or V2 Ultra's context
    blocks; `attention` every CBAM.
    """
    top = param_name.split(".", 1)[0]
    if top == "body":
        return "backbone"
    if "cbam" in top or top == "attention":
        return "attention"
    if top in ("bifpn", "fpn", "lateral"):
        return "bifpn"
    if top.startswith("ssh") or top in ("context", "deep_context"):
        return "context"
    if top in ("ClassHead", "BboxHead", "LandmarkHead", "heads"):
        return "heads"
    return "other"


def _is_dcn_main_weight(model: nn.Module, param_name: str) -> bool:
    module_name, _, leaf = param_name.rpartition(".")
    if leaf != "weight" or not module_name.endswith("regular_conv"):
        return False
    return isinstance(model.get_submodule(module_name.rpartition(".")[0]), DeformableConv2d)


def parameter_counts(model: nn.Module) -> dict:
    """True count, thop-style count, and the true count per component."""
    components = dict.fromkeys(COMPONENTS, 0)
    total = thop_style = 0
    for name, param in model.named_parameters():
        total += param.numel()
        components[component_of(name)] += param.numel()
        # thop counts only modules it knows: it never sees the weight that a DCN passes
        # to a functional op, nor bare nn.Parameters such as the BiFPN fusion weights.
        if not (_is_dcn_main_weight(model, name) or is_fusion_weight(name)):
            thop_style += param.numel()
    return {"params": total, "params_thop_style": thop_style, "components": components}


def count_macs(model: nn.Module, input_size: int) -> dict[str, int]:
    """Multiply-adds for one square image: `macs` counts convolutions, linear layers and
    the DCNs' main convolutions; `macs_thop_style` leaves the DCNs' main convolutions out,
    as the paper's counter did. Elementwise ops, pooling and the DCNs' bilinear sampling
    are counted in neither."""
    macs = dcn_macs = 0

    def conv_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal macs
        macs += conv_macs(module, output)

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal macs
        macs += output.numel() * module.in_features

    def dcn_hook(module: DeformableConv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal macs, dcn_macs
        main = conv_macs(module.regular_conv, output)  # its forward never runs by itself
        macs, dcn_macs = macs + main, dcn_macs + main

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, DeformableConv2d):
            handles.append(module.register_forward_hook(dcn_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {"macs": macs, "macs_thop_style": macs - dcn_macs}


def describe(model: nn.Module, input_size: int) -> dict:
    return {**parameter_counts(model), **count_macs(model, input_size), "input_size": input_size}
