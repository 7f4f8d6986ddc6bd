"""An independent NumPy forward pass of a Hugging Face BERT checkpoint (the
reference the converted keras-nlp backbone is checked against)."""

from math import erf, sqrt

import numpy as np

_erf = np.vectorize(erf, otypes=[np.float64])


def _layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / sqrt(2.0)))


def sentence_embeddings(weights, config, token_ids: np.ndarray) -> np.ndarray:
    """Mean-pooled, L2-normalised last-layer states (sentence-transformers' recipe);
    ``token_ids`` [batch, length] with 0 as padding. Float64 throughout."""
    w = {k: v.astype(np.float64) for k, v in weights.items() if v.dtype != np.int64}
    mask = token_ids != 0
    length = token_ids.shape[1]
    x = (
        w["embeddings.word_embeddings.weight"][token_ids]
        + w["embeddings.position_embeddings.weight"][:length][None]
        + w["embeddings.token_type_embeddings.weight"][0][None, None]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], 1e-12)
    heads = config.num_heads
    head_dim = config.hidden_dim // heads
    bias = np.where(mask, 0.0, -1e9)[:, None, None, :]
    for n in range(config.num_layers):
        p = f"encoder.layer.{n}."

        def linear(v, name, p=p):
            return v @ w[f"{p}{name}.weight"].T + w[f"{p}{name}.bias"]

        def split(v):
            return v.reshape(v.shape[0], length, heads, head_dim).transpose(0, 2, 1, 3)

        q = split(linear(x, "attention.self.query"))
        k = split(linear(x, "attention.self.key"))
        v = split(linear(x, "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = scores / scores.sum(-1, keepdims=True)
        context = (attention @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = _layer_norm(
            x + linear(context, "attention.output.dense"),
            w[f"{p}attention.output.LayerNorm.weight"],
            w[f"{p}attention.output.LayerNorm.bias"],
            1e-12,
        )
        hidden = _gelu(linear(x, "intermediate.dense"))
        x = _layer_norm(
            x + linear(hidden, "output.dense"),
            w[f"{p}output.LayerNorm.weight"],
            w[f"{p}output.LayerNorm.bias"],
            1e-12,
        )
    m = mask[..., None].astype(np.float64)
    pooled = (x * m).sum(1) / m.sum(1)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
