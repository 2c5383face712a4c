"""The tokenizer a GGUF carries, rebuilt with Hugging Face `tokenizers` (BPE, byte-level), and its chat template.

GGUF stores the vocabulary, the merges, each token's type (control tokens such as <|im_start|> are
matched whole in text) and a pre-tokenizer name (`tokenizer.ggml.pre`) that picks the regex
splitting text before BPE; PRE_TOKENIZERS maps the names we support onto `tokenizers`' pieces.
"""

from __future__ import annotations

from compiler.llm.gguf import GGUFError, GGUFModel

CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token types that are matched as whole special tokens
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _pre_tokenizer(name: str):
    from tokenizers import Regex, pre_tokenizers as pt

    byte_level = pt.ByteLevel(add_prefix_space=False, use_regex=True)  # GPT-2's split regex, then bytes
    table = {
        "gpt2": lambda: byte_level,
        "default": lambda: byte_level,
        "smollm": lambda: pt.Sequence([pt.Digits(individual_digits=True), byte_level]),
        "starcoder": lambda: pt.Sequence([pt.Digits(individual_digits=True), byte_level]),
        "llama-bpe": lambda: pt.Sequence([pt.Split(Regex(LLAMA3_SPLIT), "isolated"),
                                          pt.ByteLevel(add_prefix_space=False, use_regex=False)]),
    }
    if name not in table:
        raise GGUFError(f"tokenizer pre-tokenizer {name!r} is not supported; supported: {', '.join(sorted(table))}")
    return table[name]()


class GGUFTokenizer:
    """encode(text) -> token ids, decode(ids) -> text, as the GGUF's own tokenizer does."""

    def __init__(self, model: GGUFModel):
        from tokenizers import AddedToken, Tokenizer, decoders, models

        kind = model.field("tokenizer.ggml.model")
        if kind != "gpt2":
            raise GGUFError(f"{model.path.name}: tokenizer model {kind!r} is not supported (only byte-level BPE, 'gpt2')")
        tokens = list(model.field("tokenizer.ggml.tokens"))
        merges = [tuple(m.split(" ", 1)) for m in model.field("tokenizer.ggml.merges")]
        types = list(model.field("tokenizer.ggml.token_type", [1] * len(tokens)))
        vocab = {token: index for index, token in enumerate(tokens)}
        self._tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=False))
        self._tok.pre_tokenizer = _pre_tokenizer(str(model.field("tokenizer.ggml.pre", "default")))
        self._tok.decoder = decoders.ByteLevel()
        special = [AddedToken(tokens[i], special=True, normalized=False)
                   for i, t in enumerate(types) if t in (CONTROL, USER_DEFINED)]
        self._tok.add_special_tokens(special)
        self.bos_id = int(model.field("tokenizer.ggml.bos_token_id", -1))
        self.eos_id = int(model.field("tokenizer.ggml.eos_token_id", -1))
        self.add_bos = bool(model.field("tokenizer.ggml.add_bos_token", False))
        self.chat_template = model.field("tokenizer.chat_template") if model.has("tokenizer.chat_template") else None
        # generation ends at end-of-sequence or end-of-turn, as llama.cpp's llama_vocab_is_eog says
        self.stop_ids = {int(model.field(key)) for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")
                         if model.has(key)}
        self._tokens = tokens

    def encode(self, text: str) -> list[int]:
        ids = self._tok.encode(valid_unicode(text), add_special_tokens=False).ids
        return [self.bos_id, *ids] if self.add_bos and self.bos_id >= 0 else ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def chat_prompt(self, user_message: str) -> str:
        """The prompt text for one user turn, rendered from the GGUF's chat template (jinja, as transformers does)."""
        return self.chat_text([{"role": "user", "content": user_message}])

    def chat_text(self, messages: list[dict]) -> str:
        """A conversation ({"role", "content"} messages) rendered for the model's next reply."""
        if not self.chat_template:
            raise GGUFError("this GGUF has no tokenizer.chat_template: run without --chat")
        bos = self._tokens[self.bos_id] if self.bos_id >= 0 else ""
        eos = self._tokens[self.eos_id] if self.eos_id >= 0 else ""
        return render_chat_template(self.chat_template, messages, bos_token=bos, eos_token=eos)


def _chat_environment():
    """Jinja's immutable sandbox with the helpers chat templates call (those transformers provides):
    the template comes from the GGUF file, so it must not reach Python objects or change ours."""
    import json
    from datetime import datetime

    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def render_chat_template(template: str, messages: list[dict], **variables) -> str:
    """A GGUF's chat template rendered in the sandbox; an escape attempt or a template error is a
    GGUFError naming the chat template (never a traceback from inside jinja)."""
    import jinja2

    try:
        return _chat_environment().from_string(template).render(messages=messages, add_generation_prompt=True,
                                                                **variables)
    except jinja2.exceptions.SecurityError as err:
        raise GGUFError(f"the GGUF's chat template (tokenizer.chat_template) tried an unsafe operation, "
                        f"refused by the sandbox: {err}") from None
    except jinja2.TemplateError as err:
        raise GGUFError(f"the GGUF's chat template (tokenizer.chat_template) failed: {_one_line(err)}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as err:  # e.g. {{ 1/0 }}
        raise GGUFError(f"the GGUF's chat template (tokenizer.chat_template) failed: {type(err).__name__}: "
                        f"{_one_line(err)}") from None


def _one_line(err: Exception) -> str:
    """An error's message on one line (a template's own message may span several)."""
    return " ".join(str(err).split())


def valid_unicode(text: str) -> str:
    """`text` with what is not Unicode replaced by U+FFFD, as a UTF-8 decoder's "replace" does: bytes
    that were not UTF-8 reach Python from argv or a pipe as lone surrogates (surrogateescape), which
    the tokenizer refuses."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates of another origin
        raw = text.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")
