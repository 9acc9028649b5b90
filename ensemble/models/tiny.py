"""Tiny real models built from configs: no downloads, deterministic, shipped with the package.

Each builder seeds torch with 0 and builds a real model of a real architecture, small enough to run a
forward pass in milliseconds on a CPU. Tests, smoke runs and Ray workers use them wherever a model of a
kind is needed but its quality is not. Each can be saved to a directory in the standard format of its
library, and :func:`tiny_dir` builds it once into ``<cache_dir>/tiny/<name>`` so that
``resolve("tiny-causal-lm")`` etc. work (source ``"tiny"``).

The text models share one byte-level BPE tokenizer trained in code on built-in arithmetic
word-problem text (digits split one by one, ``<<``, ``>>``, ``=``, ``####``), with ``<|endoftext|>``
as BOS/EOS and a separate ``<pad>``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ensemble.models.cache import cache_dir, is_complete, prepare_dir

TINY_VERSION = 3
"""Bumped whenever a tiny model's definition changes; cached builds of another version are rebuilt."""

EOS, PAD, CLS = "<|endoftext|>", "<pad>", "<cls>"
TOKENIZER_VOCAB_SIZE = 600
CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
"""open_clip config of ``tiny-clip`` (its BPE tokenizer is open_clip's own, which works offline)."""

_NAMES = ("Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Ken", "Alexis", "Tina", "Mark")
_ITEMS = ("clips", "apples", "pages", "cookies", "marbles", "books", "eggs", "stickers", "pens", "cards")


def arithmetic_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Built-in GSM8K-style question/solution text for training the tiny tokenizer.

    Args:
        n: number of problems.
        seed: seed of the generator (the corpus is a pure function of ``n`` and ``seed``).

    Returns:
        ``n`` strings "Question: … Answer: … <<a+b=c>>c … #### c".
    """
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        who, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        a, b, k = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
        if i % 2 == 0:
            total, product = a + b, (a + b) * k
            lines.append(
                f"Question: {who} has {a} {item} and buys {b} more. Then {who} gets {k} times as many. "
                f"How many {item} does {who} have now? "
                f"Answer: {who} has {a}+{b} = <<{a}+{b}={total}>>{total} {item}. "
                f"Then {total}*{k} = <<{total}*{k}={product}>>{product} {item}.\n#### {product}"
            )
        else:
            pay = a * k
            spent = rng.randint(1, pay - 1)
            lines.append(
                f"Question: {who} earns ${a} per hour and works {k} hours each day. {who} spends ${spent} on "
                f"{item}. How much money is left at the end of the day? "
                f"Answer: {who} earns {a}*{k} = <<{a}*{k}={pay}>>{pay} dollars in total. "
                f"So {pay}-{spent} = <<{pay}-{spent}={pay - spent}>>{pay - spent} dollars are left."
                f"\n#### {pay - spent}"
            )
    return lines


def tiny_tokenizer(for_encoder: bool = False):
    """The shared tiny tokenizer as a ``PreTrainedTokenizerFast``.

    Args:
        for_encoder: add ``<cls>`` … ``<|endoftext|>`` around each sequence (BERT-style models);
            the causal-LM variant adds nothing.

    Returns:
        A fast tokenizer with ``eos_token``/``bos_token`` ``<|endoftext|>`` and ``pad_token`` ``<pad>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        special_tokens=[EOS, PAD, CLS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(arithmetic_corpus(), trainer=trainer)
    tok.add_tokens(["<<", ">>", "####"])
    if for_encoder:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {EOS}",
            pair=f"{CLS} $A {EOS} $B {EOS}",
            special_tokens=[(CLS, tok.token_to_id(CLS)), (EOS, tok.token_to_id(EOS))],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        cls_token=CLS,
        model_max_length=256,
    )


def tiny_causal_lm():
    """A 2-layer GPT-2 (``n_embd=32``) and the tiny tokenizer.

    Returns:
        ``(GPT2LMHeadModel, PreTrainedTokenizerFast)``; logits have shape ``[batch, seq, vocab]``.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=1024,  # GSM-Symbolic test prompts reach ~300 tokens
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval(), tokenizer


def _tiny_bert_config(tokenizer, **extra: Any):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def tiny_text_encoder():
    """A 2-layer BERT encoder (hidden size 32) and the encoder variant of the tiny tokenizer.

    Returns:
        ``(BertModel, PreTrainedTokenizerFast)``; ``last_hidden_state`` is ``[batch, seq, 32]``.
    """
    import torch
    from transformers import BertModel

    tokenizer = tiny_tokenizer(for_encoder=True)
    torch.manual_seed(0)
    return BertModel(_tiny_bert_config(tokenizer)).eval(), tokenizer


def tiny_sequence_classifier(num_labels: int = 2):
    """A 2-layer BERT classifier (e.g. a verifier: label 1 = correct) and its tokenizer.

    Returns:
        ``(BertForSequenceClassification, PreTrainedTokenizerFast)``; logits are ``[batch, num_labels]``.
    """
    import torch
    from transformers import BertForSequenceClassification

    tokenizer = tiny_tokenizer(for_encoder=True)
    torch.manual_seed(0)
    model = BertForSequenceClassification(_tiny_bert_config(tokenizer, num_labels=num_labels))
    return model.eval(), tokenizer


def tiny_clip():
    """An open_clip CLIP from :data:`CLIP_CONFIG` (32 px ViT, 2-layer text tower), random init.

    Returns:
        ``(model, tokenizer, preprocess)``: ``tokenizer(list[str])`` → ``LongTensor[N, 77]``;
        ``preprocess(PIL.Image)`` → ``Tensor[3, 32, 32]``; ``model.encode_image`` / ``encode_text`` →
        ``[N, 32]``.
    """
    import open_clip
    import torch
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = open_clip.CLIP(
        CLIP_CONFIG["embed_dim"],
        CLIPVisionCfg(**CLIP_CONFIG["vision_cfg"]),
        CLIPTextCfg(**CLIP_CONFIG["text_cfg"]),
    ).eval()
    size = CLIP_CONFIG["vision_cfg"]["image_size"]
    preprocess = open_clip.image_transform(
        size, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD
    )
    tokenizer = open_clip.SimpleTokenizer(context_length=CLIP_CONFIG["text_cfg"]["context_length"])
    return model, tokenizer, preprocess


def tiny_unet(num_classes: int = 24):
    """A class-conditional ``UNet2DModel`` (16 px, channels (8, 16)) and a 100-step DDIM scheduler.

    Class ``num_classes`` (the last embedding) means "no class", for classifier-free guidance.

    Returns:
        ``(UNet2DModel, DDIMScheduler)``; ``unet(x[B,3,16,16], t, class_labels=y[B]).sample`` has
        the shape of ``x``.
    """
    import torch
    from diffusers import DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
        num_class_embeds=num_classes + 1,
    ).eval()
    scheduler = DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    return unet, scheduler


def tiny_image_classifier(num_classes: int = 24):
    """timm ``test_efficientnet`` (~0.1 M params) with ``num_classes`` outputs, 32 px, mean = std = 0.5.

    Returns:
        ``(model, data_config)``; ``model(x[B,3,32,32])`` → logits ``[B, num_classes]``.
    """
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=num_classes).eval()
    data_config = {
        "input_size": (3, 32, 32),
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "crop_pct": 1.0,
    }
    return model, data_config


# -- saving and caching ----------------------------------------------------------------------------------


def _save_transformers(builder: Callable[[], tuple]) -> Callable[[Path], None]:
    def save(out: Path) -> None:
        model, tokenizer = builder()
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    return save


def _save_clip(out: Path) -> None:
    import open_clip
    import safetensors.torch

    model, _, _ = tiny_clip()
    safetensors.torch.save_file(model.state_dict(), str(out / "open_clip_model.safetensors"))
    preprocess_cfg = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}
    config = {"model_cfg": CLIP_CONFIG, "preprocess_cfg": preprocess_cfg}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2))


def _save_unet(out: Path) -> None:
    unet, scheduler = tiny_unet()
    unet.save_pretrained(out / "unet")
    scheduler.save_pretrained(out / "scheduler")
    index = {
        "_class_name": "DDIMPipeline",
        "unet": ["diffusers", "UNet2DModel"],
        "scheduler": ["diffusers", type(scheduler).__name__],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2))


def _save_image_classifier(out: Path) -> None:
    from timm.models import save_for_hf

    model, data_config = tiny_image_classifier()
    save_for_hf(model, str(out), safe_serialization=True, data_config=data_config)


TINY_SAVERS: dict[str, Callable[[Path], None]] = {
    "tiny-causal-lm": _save_transformers(tiny_causal_lm),
    "tiny-text-encoder": _save_transformers(tiny_text_encoder),
    "tiny-sequence-classifier": _save_transformers(tiny_sequence_classifier),
    "tiny-clip": _save_clip,
    "tiny-unet": _save_unet,
    "tiny-image-classifier": _save_image_classifier,
}
"""Tiny model name → function saving it into a directory (the standard format of its library)."""


def save_tiny(name: str, directory: Path) -> Path:
    """Build the tiny model ``name`` and save it into ``directory`` (created if needed)."""
    if name not in TINY_SAVERS:
        raise KeyError(f"unknown tiny model {name!r}; tiny models: {', '.join(TINY_SAVERS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    TINY_SAVERS[name](directory)
    (directory / "ensemble_tiny.json").write_text(json.dumps({"name": name, "version": TINY_VERSION}))
    return directory


def tiny_dir(name: str) -> Path:
    """The saved tiny model ``name`` in ``<cache_dir>/tiny/<name>``, built on first use.

    A build of another :data:`TINY_VERSION` is replaced; concurrent first uses build it once.
    """
    if name not in TINY_SAVERS:
        raise KeyError(f"unknown tiny model {name!r}; tiny models: {', '.join(TINY_SAVERS)}")
    target = cache_dir() / "tiny" / name
    stale = is_complete(target) and _built_version(target) != TINY_VERSION
    return prepare_dir(target, lambda out: save_tiny(name, out), lock_name=f"tiny/{name}", replace=stale)


def _built_version(path: Path) -> int | None:
    try:
        return int(json.loads((path / "ensemble_tiny.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None
