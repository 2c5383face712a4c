"""A GGUF's chat template is code from the file: it renders in jinja's immutable sandbox, so a
template that reaches for Python objects is a clear error naming the chat template, never a command."""

from __future__ import annotations

import pytest

from compiler.llm.gguf import GGUFError
from compiler.llm.tokenizer import GGUFTokenizer, render_chat_template

pytestmark = pytest.mark.unit

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def tokenizer_with(template: str) -> GGUFTokenizer:
    """A tokenizer holding only what chat_prompt reads (no GGUF file needed)."""
    tokenizer = GGUFTokenizer.__new__(GGUFTokenizer)
    tokenizer.chat_template = template
    tokenizer._tokens = ["<s>", "</s>"]
    tokenizer.bos_id, tokenizer.eos_id = 0, 1
    return tokenizer


def test_a_normal_template_renders():
    assert tokenizer_with(CHATML).chat_prompt("What is 2+2?") == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_the_helpers_chat_templates_use_still_work():
    template = ("{{ bos_token }}{% for m in messages %}{% if m.role != 'user' %}{{ raise_exception('users only') }}"
                "{% endif %}{{ m | tojson }}{% break %}{% endfor %}{{ eos_token }}")
    messages = [{"role": "user", "content": "héllo"}]
    assert render_chat_template(template, messages, bos_token="<s>", eos_token="</s>") == (
        '<s>{"role": "user", "content": "héllo"}</s>')
    with pytest.raises(GGUFError, match="chat template.*users only"):
        render_chat_template(template, [{"role": "system", "content": "x"}])
    assert render_chat_template("{{ strftime_now('%Y') | length }}", messages) == "4"


@pytest.mark.parametrize("escape", [
    "{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}",
    "{{{{ joiner.__init__.__globals__.os.popen('touch {marker}').read() }}}}",
    "{{{{ ''.__class__.__mro__[1].__subclasses__() }}}}{{{{ messages.append('touch {marker}') }}}}",
])
def test_a_template_escaping_the_sandbox_is_refused_and_runs_nothing(tmp_path, escape):
    marker = tmp_path / "pwned"
    tokenizer = tokenizer_with(escape.format(marker=marker))
    with pytest.raises(GGUFError, match=r"chat template \(tokenizer.chat_template\) tried an unsafe operation"):
        tokenizer.chat_prompt("hi")
    assert not marker.exists()
