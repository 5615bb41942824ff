"""``Sequential``: layers applied in order, gradients passed back in reverse.

A ReLU costs a pass over its tensor each way. Where the layer before it can rectify its own output
(``fuses_next_relu``: convolution, linear) the ReLU's forward happens there, and where the layer
after it can mask its own input gradient (``fuses_previous_relu``: max pooling) the ReLU's
backward happens there, so tutorial-mnist's ReLUs launch one kernel per step instead of six. The
values are those of the unfused layers (the tests compare them); a layer called on its own is
never fused. Each layer's forward arrays go as soon as its backward is done (a layer called on its
own keeps them until its next forward).
"""

from __future__ import annotations

from ..functional import check_flag
from ..shapes import integer
from .activation import ReLU
from .module import Module


class Sequential(Module):
    """``Sequential(conv, relu, ...)``: children named "0", "1", ... as in PyTorch."""

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):  # a function (F.relu) or a list of layers, say
                raise TypeError(
                    f"Sequential: layer {i} must be a gpucnn Module, got {type(layer).__name__} "
                    "(a layer such as nn.ReLU(); a list of layers goes in as Sequential(*layers))"
                )
        _check_each_layer_once(layers)
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)
        relus = [i for i, layer in enumerate(layers) if type(layer) is ReLU]
        # ReLUs whose forward the layer before does, and whose backward the layer after does.
        self._relu_ahead = {i for i in relus if i > 0 and layers[i - 1].fuses_next_relu}
        self._relu_behind = {
            i for i in relus if i + 1 < len(layers) and layers[i + 1].fuses_previous_relu
        }

    def __getitem__(self, index: int | slice) -> Module:
        """The layer at ``index``; a slice is a Sequential of those same layer objects (as in
        PyTorch, but numbered again from "0": ``model[2:]``'s first layer is its "0"), in the
        training mode of this one."""
        layers = list(self._modules.values())
        if not isinstance(index, slice):
            i = integer(index, "Sequential index")  # True would be layer 1
            if not -len(layers) <= i < len(layers):
                raise IndexError(f"Sequential index {i} is out of range for {len(layers)} layers")
            return layers[i]
        part = Sequential(*layers[index])
        object.__setattr__(part, "training", self.training)
        return part

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        layers, inference = list(self), self._inference
        for i, layer in enumerate(layers):
            if i in self._relu_ahead:
                x = layer.rectified(x)
            elif i + 1 in self._relu_ahead:
                x = layer(x, relu=True)
            else:
                x = layer(x)
            if inference:  # no backward follows: the layer's input can go with its arrays
                layer.release_forward()
            elif i - 1 in self._relu_behind:  # this layer masks for that ReLU: its output can go
                layers[i - 1].release_forward()
        return x

    def backward(self, grad_out, input_grad: bool = True):
        """Gradients back through the layers; returns d(loss)/d(input), or None when
        ``input_grad`` is False (training: the data needs no gradient, so the first layer skips
        computing it). An empty Sequential passes ``grad_out`` back, as its forward does ``x``.
        Each layer's forward arrays are freed once its backward is done: one backward per
        forward (for two losses, backpropagate their sum)."""
        check_flag(input_grad, "input_grad")
        layers = list(self)
        if not layers:
            return grad_out if input_grad else None
        for i in range(len(layers) - 1, 0, -1):
            grad_out = self._layer_backward(layers, i, grad_out)
        if input_grad:
            return self._layer_backward(layers, 0, grad_out)
        if 0 not in self._relu_behind:
            layers[0].backward_params(grad_out)
        layers[0].release_forward()
        return None

    def _layer_backward(self, layers: list[Module], i: int, grad_out):
        """Layer i's backward, after which its forward's arrays go (``release_forward``)."""
        if i in self._relu_behind:  # the layer after has applied this ReLU's mask
            return grad_out
        if i - 1 in self._relu_behind:
            grad_in = layers[i].backward(grad_out, relu=True)
        else:
            grad_in = layers[i].backward(grad_out)
        layers[i].release_forward()
        return grad_in


def _check_each_layer_once(layers: tuple[Module, ...]) -> None:
    """A layer keeps what its backward needs (its input, a mask) from its last forward, so one
    layer object in two places would give the first place the second's gradients: refuse it."""
    seen: dict[int, str] = {}
    for i, layer in enumerate(layers):
        for name, module in layer.named_modules(f"{i}."):
            where = name.removesuffix(".")
            if id(module) in seen:
                raise ValueError(
                    f"Sequential: layer {where} ({type(module).__name__}) is the same object as "
                    f"layer {seen[id(module)]}; a layer keeps its forward's input for backward, "
                    "so make a new layer for each place"
                )
            seen[id(module)] = where
