"""Helpers every prompt builder uses to keep members' text in its place."""

from __future__ import annotations

import re

# Members' text is wrapped in tags; anything inside that looks like a tag is defused,
# so a post or a draft cannot close its block and pose as instructions.
_TAG_LIKE = re.compile(r"<(/?)([A-Za-z_])")


def quote(tag: str, text: str, **attributes: str) -> str:
    """Wrap member-supplied `text` in `<tag ...>...</tag>`, defusing tag-like text inside."""
    attrs = "".join(f' {k}="{_attr(v)}"' for k, v in attributes.items())
    body = _TAG_LIKE.sub(r"&lt;\1\2", text)
    return f"<{tag}{attrs}>{body}</{tag}>"


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def bullet_list(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items) if items else "(none)"
