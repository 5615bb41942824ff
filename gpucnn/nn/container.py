"""``Sequential``: layers applied in order, gradients passed back in reverse."""

from __future__ import annotations

from .module import Module


class Sequential(Module):
    """``Sequential(conv, relu, ...)``: children named "0", "1", ... as in PyTorch."""

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for layer in self:
            x = layer(x)
        return x

    def backward(self, grad_out, input_grad: bool = True):
        """Gradients back through the layers; returns d(loss)/d(input), or None when
        ``input_grad`` is False (training: the data needs no gradient, so the first layer skips
        computing it)."""
        first, *rest = list(self)
        for layer in reversed(rest):
            grad_out = layer.backward(grad_out)
        if input_grad:
            return first.backward(grad_out)
        first.backward_params(grad_out)
        return None
