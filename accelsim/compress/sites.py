"""The input site of a linear: which tensor of the block its input activation is.

Four sites per encoder block, named by the linear that reads them:

* ``qkv``: the Q, K and V projections read the block's LayerNorm output;
* ``attn_out``: the attention output projection reads the attention context;
* ``ffn_up``: the first FFN linear reads the (second) LayerNorm output;
* ``ffn_down``: the second FFN linear reads the GELU output.

Post-LN (BERT, wav2vec2) and pre-LN (ViT, DINOv2, Whisper) blocks agree on this: both Q/K/V and
FFN-up read a LayerNorm output, the tensor where transformers keep their outlier channels
(Bondarenko et al. 2021), which is why recipes can give a site its own activation width
(``act_bits_by_site``, and ``weight_bits_by_site`` for the weights), like the IBM code's
``nbits_a_qkv``. An extra linear outside the blocks whose name matches one site (Whisper's
decoder linears) takes that site's widths (:func:`site_if_any`).

A fifth site sits outside the blocks: ``lm_head``, a decoder's output projection to the
vocabulary (``lm_head``; Whisper's ``proj_out``), which reads the final LayerNorm output. It is
the largest weight of a small recognizer (Whisper tiny.en's 51,864 x 384 is more than all its
blocks' linears together) and the one a decode step streams every token, so a recipe may give
it its own widths and keep it dense. An encoder's classifier head matches no site.

``dense_sites`` may also name a site in one stack of an encoder-decoder model:
``encoder.ffn_down`` keeps the encoder's FFN down projections dense and prunes the decoder's.
A linear's stack is the first component of its module path that is ``encoder`` or ``decoder``
(Whisper's ``model.encoder.layers.0.fc1``); a single-stack model's linears have none, so a
recipe that names a stack there is refused (:func:`check_stacks`) rather than silently pruning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from accelsim.errors import AccelsimError

# Module-name patterns of each site: BERT, ViT (transformers 5), DINOv2, wav2vec2, Whisper names,
# and the decoders' (GPT-2's fused c_attn and its attn/mlp c_proj, OPT's, Llama's gated FFN whose
# gate and up projections both read the norm output).
SITE_PATTERNS: dict[str, re.Pattern[str]] = {
    "qkv": re.compile(r"\.(query|key|value|[qkv]_proj|c_attn)$"),
    "attn_out": re.compile(r"\.(attention\.output\.dense|out_proj|o_proj|attn\.c_proj)$"),
    "ffn_up": re.compile(r"\.(intermediate\.dense|intermediate_dense|fc1|c_fc|gate_proj|up_proj)$"),
    "ffn_down": re.compile(r"(?<!attention)\.output\.dense$|\.(output_dense|fc2|mlp\.c_proj|"
                           r"down_proj)$"),
    "lm_head": re.compile(r"(^|\.)(lm_head|proj_out)$"),
}
SITES: tuple[str, ...] = tuple(SITE_PATTERNS)
OUTSIDE_BLOCK_SITES: tuple[str, ...] = ("lm_head",)
BLOCK_SITES: tuple[str, ...] = tuple(s for s in SITES if s not in OUTSIDE_BLOCK_SITES)
STACKS: tuple[str, ...] = ("encoder", "decoder")
SITE_INPUTS: dict[str, str] = {
    "qkv": "Q/K/V projections (LayerNorm output)",
    "attn_out": "attention output projection (context)",
    "ffn_up": "FFN up projection (LayerNorm output)",
    "ffn_down": "FFN down projection (GELU output)",
    "lm_head": "a decoder's output projection to the vocabulary (final LayerNorm output)",
}


def stack_of(name: str) -> str | None:
    """The stack (``encoder`` or ``decoder``) of the linear at module path ``name``: the first
    path component naming one; None for a single-stack model's linear."""
    return next((part for part in name.split(".") if part in STACKS), None)


def dense_entry_error(entry: str) -> str | None:
    """Why ``entry`` is no valid ``dense_sites`` entry (a site, or ``<stack>.<site>``), else
    None."""
    stack, _, site = entry.rpartition(".")
    if site in SITES and stack in ("", *STACKS):
        return None
    return (f"dense_sites: {entry!r} is not a site ({', '.join(SITES)}) or a site in one stack "
            f"({' or '.join(f'{s}.<site>' for s in STACKS)})")


def check_stacks(dense_sites: tuple[str, ...], linears: list[str], model: str) -> None:
    """One line when an entry of ``dense_sites`` names a stack that no linear of ``model``
    (module paths ``linears``) sits in: it would prune what the recipe means to keep dense."""
    present = {stack_of(name) for name in linears}
    for entry in dense_sites:
        stack = entry.rpartition(".")[0]
        if stack and stack not in present:
            raise AccelsimError(f"dense_sites: {entry!r} names the {stack} stack, but no linear "
                                f"of {model} is in a module named {stack!r}; name the site "
                                f"alone for a single-stack model")


def site_if_any(name: str) -> str | None:
    """The site of the linear at module path ``name`` when exactly one pattern matches, else
    None: how an extra linear (``quantize_extra``) outside the encoder blocks gets one, e.g.
    Whisper's decoder Q/K/V (``qkv``), and a head (no match) keeps the recipe's widths."""
    matches = [site for site, pattern in SITE_PATTERNS.items() if pattern.search(name)]
    return matches[0] if len(matches) == 1 else None


class SiteRules:
    """The per-site rules of a compression recipe, for any holder of its fields (the recipe
    itself, and a decoder's nominal precision in :mod:`accelsim.graph.phases`): one place says
    which widths and which sparsity a linear at an input site gets."""

    weight_bits: int
    act_bits: int
    weight_bits_by_site: Mapping[str, int]
    act_bits_by_site: Mapping[str, int]
    sparsity: str
    dense_sites: tuple[str, ...]

    def widths_at(self, site: str | None) -> tuple[int, int]:
        """``(weight_bits, act_bits)`` of a linear at input ``site`` (None: no site, e.g. a
        head): the per-site widths where the rules name the site, else the general ones."""
        return (self.weight_bits_by_site.get(site, self.weight_bits),
                self.act_bits_by_site.get(site, self.act_bits))

    def sparse_at(self, site: str | None, stack: str | None = None) -> bool:
        """Whether a linear at input ``site`` (None: no site, e.g. a head) in ``stack`` (None:
        a single-stack model's) gets 2:4 masks."""
        return (self.sparsity == "2:4" and site not in self.dense_sites
                and f"{stack}.{site}" not in self.dense_sites)


def site_of(name: str) -> str:
    """The site of the encoder linear at module path ``name``; one line when none or several
    of the block sites match."""
    matches = [site for site in BLOCK_SITES if SITE_PATTERNS[site].search(name)]
    if len(matches) != 1:
        raise AccelsimError(f"linear {name!r}: input site matches {matches or 'none'}; an "
                            f"encoder linear must match exactly one of {', '.join(BLOCK_SITES)}")
    return matches[0]
