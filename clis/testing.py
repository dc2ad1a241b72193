"""Tiny random models for tests, built offline in seconds and saved like real checkpoints.

Each ``build_tiny_*`` function writes a model folder (``save_pretrained`` / safetensors, with a
locally built tokenizer and processor) under ``root`` and returns its spec string, which
:func:`clis.models.load_model` loads through exactly the code path real checkpoints use. The
weights are random, so scores from these models mean nothing; shapes, plumbing, file
formats and error paths are what they exercise.

Example:
    >>> import tempfile
    >>> from clis.models import load_model
    >>> spec = build_tiny_causal_lm(tempfile.mkdtemp())
    >>> load_model(spec, "causal-lm").backend
    'hf'
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

# Words the tiny WordPiece (Grounding DINO) and BPE (causal LM) vocabularies know, so test
# prompts tokenise into real tokens instead of [UNK].
_WORDS = (
    "a an the of on in under above below left right next to near behind front and with is are "
    "cat dog cup table sofa lamp person car tree bird horse chair bed book bottle plate red blue "
    "green yellow white black small large big wooden sitting standing photo image picture "
    "puppy airplane motorcycle rocket coffee astronaut yes no there"
).split()
_SEED = 0


def _root(root: str | Path, name: str) -> Path:
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@functools.lru_cache(maxsize=1)
def _clip_bpe_files() -> tuple[str, str]:
    """(vocab.json text, merges.txt text) of CLIP's BPE; built once per process (~2 s)."""
    from open_clip.tokenizer import SimpleTokenizer

    simple = SimpleTokenizer()
    # open_clip names the special tokens <start_of_text>/<end_of_text>; transformers' CLIP
    # tokenizer calls the same two ids <|startoftext|>/<|endoftext|>.
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(tok, tok): idx for tok, idx in simple.encoder.items()}
    merges = sorted(simple.bpe_ranks, key=simple.bpe_ranks.get)
    merges_text = "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    return json.dumps(vocab, ensure_ascii=False), merges_text


def write_clip_bpe_vocab(folder: str | Path) -> Path:
    """Write CLIP's real BPE vocabulary as ``vocab.json`` + ``merges.txt`` into ``folder``.

    Derived from the ``bpe_simple_vocab_16e6.txt.gz`` that open_clip ships, so the tiny HF
    CLIP, OWLv2 and open_clip models tokenise exactly like the released CLIP models.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_text, merges_text = _clip_bpe_files()
    (folder / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    return folder


def _clip_tokenizer(folder: Path, context_length: int):
    from transformers import CLIPTokenizer

    write_clip_bpe_vocab(folder)
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.model_max_length = context_length
    return tokenizer


def _text_vision_sizes() -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def build_tiny_hf_clip(root: str | Path, name: str = "tiny-hf-clip") -> str:
    """Random transformers ``CLIPModel`` (32-wide, 2 layers, 32x32 images, real CLIP tokenizer)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder = _root(root, name)
    torch.manual_seed(_SEED)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407, **_text_vision_sizes()),
        vision_config=dict(image_size=32, patch_size=8, **_text_vision_sizes()),
        projection_dim=16,
    )
    CLIPModel(config).eval().save_pretrained(folder, safe_serialization=True)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=_clip_tokenizer(folder, 77)).save_pretrained(folder)
    return str(folder)


OPEN_CLIP_TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def build_tiny_open_clip(root: str | Path, name: str = "tiny-open-clip") -> str:
    """Random open_clip model in a self-describing folder (open_clip_config.json + safetensors).

    Nothing is registered in open_clip's global config table: ``load_model(folder, "clip")``
    reads the config from the folder (open_clip's ``local-dir:`` schema).
    """
    import open_clip
    from safetensors.torch import save_file

    folder = _root(root, name)
    config = {
        "model_cfg": OPEN_CLIP_TINY_CFG,
        "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD),
                           "interpolation": "bicubic", "resize_mode": "shortest"},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.manual_seed(_SEED)
    model = open_clip.CLIP(**OPEN_CLIP_TINY_CFG)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return str(folder)


def _write_wordpiece_vocab(folder: Path) -> Path:
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "-"] + list(_WORDS) + letters
    tokens += [f"##{c}" for c in letters]
    path = folder / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    return path


def build_tiny_grounding_dino(root: str | Path, name: str = "tiny-grounding-dino") -> str:
    """Random ``GroundingDinoForObjectDetection`` (tiny Swin + BERT, 2 decoder layers, 64px input).

    Every image is resized to 64 x 64, and the backbone's feature maps are those of stages
    1-3 (16, 8 and 4 px), so the extra level Grounding DINO adds is 2 x 2. With stages 2-4 and
    aspect-keeping resizing, a square 64 px image alone in a batch reached a 1 x 1 map, where
    GroupNorm fails ("Expected more than 1 value per channel").
    """
    from transformers import (BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor)

    folder = _root(root, name)
    vocab_path = _write_wordpiece_vocab(folder)
    tokenizer = BertTokenizer(str(vocab_path))  # positional: the keyword is ignored on transformers 5
    torch.manual_seed(_SEED)
    config = GroundingDinoConfig(
        backbone_config=dict(model_type="swin", image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1],
                             num_heads=[1, 1, 2, 2], window_size=4, out_indices=[1, 2, 3]),
        text_config=dict(model_type="bert", vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=20, num_feature_levels=4,
        encoder_n_points=2, decoder_n_points=2, max_text_len=32,
    )
    GroundingDinoForObjectDetection(config).eval().save_pretrained(folder, safe_serialization=True)
    image_processor = GroundingDinoImageProcessor(size={"height": 64, "width": 64})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)


def build_tiny_owlv2(root: str | Path, name: str = "tiny-owlv2") -> str:
    """Random ``Owlv2ForObjectDetection`` (32-wide towers, 32x32 input, real CLIP tokenizer)."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    folder = _root(root, name)
    torch.manual_seed(_SEED)
    config = Owlv2Config(
        text_config=dict(vocab_size=49408, max_position_embeddings=16, **_text_vision_sizes()),
        vision_config=dict(image_size=32, patch_size=8, **_text_vision_sizes()),
        projection_dim=32,  # OWL's class head compares image and text embeddings of this width
    )
    Owlv2ForObjectDetection(config).eval().save_pretrained(folder, safe_serialization=True)
    tokenizer = _clip_tokenizer(folder, 16)
    image_processor = Owlv2ImageProcessor(size={"height": 32, "width": 32})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)


_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _byte_level_bpe(specials: list[str], corpus: list[str], vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus, trainer=trainer)
    return bpe


def build_tiny_causal_lm(root: str | Path, name: str = "tiny-causal-lm") -> str:
    """Random Llama-style causal LM (same family as SmolLM2) with a locally trained byte-level BPE.

    The tokenizer has ``<|endoftext|>`` as eos/pad token and a small chat template, so chat
    prompting (``apply_chat_template``) and batched log-likelihoods work as with real models.
    """
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = _root(root, name)
    specials = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    corpus = [" ".join(_WORDS), "The cup is on the table.", "A cat is sitting on the sofa."] * 4
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_bpe(specials, corpus), eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        bos_token="<|endoftext|>", unk_token="<|endoftext|>", model_max_length=128,
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    torch.manual_seed(_SEED)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).eval().save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


# Image parts become the model's image token; plain-string contents are accepted too, so
# the same template serves text-only chats.
_VLM_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


# Answers a yes/no judge reads, with and without a leading space, often enough that BPE
# merges each into a single token, as real vocabularies have them.
_ANSWER_CORPUS = ["Yes, there is a cat. No, there is no dog.", "Is it red? Yes. Is it blue? No.",
                  "yes, a cup", "no, a dog", "Yes", "No", "yes", "no", "answer yes or no: no", "answer Yes or No: Yes"]


def build_tiny_llava(root: str | Path, name: str = "tiny-llava") -> str:
    """Random ``LlavaForConditionalGeneration``: a 2-layer CLIP vision tower (32x32 images, 8 px
    patches, so 16 image tokens) and a 2-layer Llama, 32 wide, with a locally trained BPE.

    The tokenizer has an ``<image>`` special token, ``<|endoftext|>`` as eos/pad, and ``Yes``,
    ``No``, ``yes``, ``no`` (also after a space) as single tokens; the processor carries a small
    chat template that takes ``{"type": "image"}`` / ``{"type": "text"}`` parts, so
    ``processor.apply_chat_template`` and ``processor(text=..., images=...)`` work as with LLaVA.
    """
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    folder = _root(root, name)
    specials = ["<|endoftext|>", "<image>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    corpus = ([" ".join(_WORDS), "The cup is on the table.", "A cat is sitting on the sofa."] + _ANSWER_CORPUS) * 4
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_bpe(specials, corpus), eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        bos_token="<|endoftext|>", unk_token="<|endoftext|>", model_max_length=256,
    )
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    image_size, patch_size = 32, 8
    # "default" drops the CLS feature, so the prompt holds one <image> per patch.
    image_tokens = (image_size // patch_size) ** 2
    torch.manual_seed(_SEED)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=image_size, patch_size=patch_size, projection_dim=32,
                                       **_text_vision_sizes()),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                bos_token_id=eos, eos_token_id=eos, pad_token_id=eos),
        image_token_index=image_token_id, image_seq_length=image_tokens,
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = model.generation_config.eos_token_id = eos
    model.save_pretrained(folder, safe_serialization=True)
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                   chat_template=_VLM_CHAT_TEMPLATE).save_pretrained(folder)
    return str(folder)


_QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2_vl(root: str | Path, name: str = "tiny-qwen2-vl") -> str:
    """Random ``Qwen2VLForConditionalGeneration`` (2-layer vision tower with 8 px patches merged
    2 x 2, 2-layer text model with multimodal RoPE, 32 wide) and a locally trained BPE.

    Images are resized to 32 x 32 pixels, four image tokens each. The tokenizer has Qwen2-VL's
    vision and box special tokens, so prompts written in its grounding syntax tokenise as they
    do for the released models.
    """
    from transformers import (PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor)

    folder = _root(root, name)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>", "<|box_start|>", "<|box_end|>"]
    corpus = ([" ".join(_WORDS), "The cup is on the table.", "(100,200),(400,600)"] + _ANSWER_CORPUS) * 4
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_bpe(specials, corpus), eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>", model_max_length=256,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    patch_size, merge_size = 8, 2
    torch.manual_seed(_SEED)
    config = Qwen2VLConfig(
        vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=patch_size,
                           spatial_merge_size=merge_size, temporal_patch_size=2),
        # The rotary halves (8 per head) split over time, height and width.
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.save_pretrained(folder, safe_serialization=True)
    side = patch_size * merge_size * 2
    vision = dict(min_pixels=side * side, max_pixels=side * side, patch_size=patch_size, merge_size=merge_size,
                  temporal_patch_size=2)
    # The processor refuses to be built without a video processor, though no test sends video.
    Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**vision), tokenizer=tokenizer,
                     video_processor=Qwen2VLVideoProcessor(**vision),
                     chat_template=_QWEN2_VL_CHAT_TEMPLATE).save_pretrained(folder)
    return str(folder)


def build_tiny_sam(root: str | Path, name: str = "tiny-sam") -> str:
    """Random ``SamModel`` (64x64 input, 16-wide prompt encoder / mask decoder)."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    folder = _root(root, name)
    torch.manual_seed(_SEED)
    config = SamConfig(
        vision_config=dict(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=8, window_size=4, global_attn_indexes=[1], mlp_dim=64,
                           num_pos_feats=8),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2,
                                 iou_head_hidden_dim=16),
    )
    SamModel(config).eval().save_pretrained(folder, safe_serialization=True)
    image_processor = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                                        mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})
    SamProcessor(image_processor=image_processor).save_pretrained(folder)
    return str(folder)


def build_tiny_models(root: str | Path) -> dict[str, str]:
    """Build every tiny model under ``root``; returns ``{name: spec}``.

    Names: ``hf_clip``, ``open_clip``, ``grounding_dino``, ``owlv2``, ``causal_lm``, ``sam``, ``vlm``
    (a tiny LLaVA, :func:`build_tiny_llava`).
    """
    root = Path(root)
    return {
        "hf_clip": build_tiny_hf_clip(root),
        "open_clip": build_tiny_open_clip(root),
        "grounding_dino": build_tiny_grounding_dino(root),
        "owlv2": build_tiny_owlv2(root),
        "causal_lm": build_tiny_causal_lm(root),
        "sam": build_tiny_sam(root),
        "vlm": build_tiny_llava(root),
    }


def _demo_commands(specs: dict[str, str], out: str = "out/tiny") -> list[str]:
    clip, gdino, sam = specs["hf_clip"], specs["grounding_dino"], specs["sam"]
    return [
        f"clis score examples/images examples/layouts.json --out {out}/scores.jsonl --overwrite "
        f"--image-model {clip} --detector {gdino} --no-layout-score",
        f"clis pick examples/images examples/layouts.json --scores {out}/scores.jsonl --out {out}/dataset "
        f"--min-instance 0 --masks sam --sam-model {sam}",
        f"clis bench corrupt examples/images examples/layouts.json -o {out}/corrupt "
        f"--image-model {clip} --detector {gdino} --no-layout-score --max-images 2 --bootstrap 100",
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m clis.testing OUT_DIR``: build the tiny models and print their specs."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m clis.testing",
        description="Build tiny random models (offline, seconds) to try clis score / pick / bench without "
                    "real weights. Their scores mean nothing.",
    )
    parser.add_argument("out_dir", help="folder to write the model folders into")
    parser.add_argument("--json", action="store_true", help="print {name: spec} as JSON only")
    args = parser.parse_args(argv)
    specs = build_tiny_models(args.out_dir)
    if args.json:
        print(json.dumps(specs, indent=2))
        return 0
    print("Tiny random models (random weights: the scores mean nothing; for trying the commands offline):")
    for name, spec in specs.items():
        print(f"{name}: {spec}")
    print("\nTry, from the repository root:")
    for command in _demo_commands(specs):
        print(f"  {command}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
