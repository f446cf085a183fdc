"""The text a browser shows for an element, so raw pieces hold the art as a reader sees it.

Pages are parsed by lxml (the parser behind scrapy's selectors), which already
does what a browser's HTML tokenizer does: entities (`&lt;`, `&amp;`, `&quot;`,
numeric) are decoded, a stray `<` that starts no tag stays text, and CR LF / CR
become LF (input-stream preprocessing, HTML spec 13.2.3.5). On top of that a
browser shows the text of nested tags (`<span>`, `<font>`, `<b>`, links) but not
of comments, scripts or styles, renders `<br>` as a line break, and drops the
one newline that directly follows a `<pre>` start tag. These rules are here.
"""

from __future__ import annotations

from typing import Any

import lxml.html

_HIDDEN = frozenset({"script", "style", "template"})
_DROPS_LEADING_NEWLINE = frozenset({"pre", "listing", "textarea"})


def _element(node: Any) -> Any:
    """An lxml element from an lxml element, a parsel Selector or an HTML string."""
    if isinstance(node, str):
        return lxml.html.fragment_fromstring(node)
    return getattr(node, "root", node)


def _collect(element: Any, out: list[str], stop: Any) -> bool:
    """Append the visible text of `element` to `out`; True once `stop` is reached."""
    if element.text:
        out.append(element.text)
    for child in element:
        if child is stop:
            return True
        if isinstance(child.tag, str):  # comments and processing instructions have no str tag
            name = child.tag.lower()
            if name == "br":
                out.append("\n")
            elif name not in _HIDDEN and _collect(child, out, stop):
                return True
        if child.tail:
            out.append(child.tail)
    return False


def pre_text(node: Any) -> str:
    """Exactly the text a browser shows for a `<pre>` (or any) element, whitespace untouched."""
    element = _element(node)
    out: list[str] = []
    _collect(element, out, None)
    text = "".join(out)
    if str(element.tag).lower() in _DROPS_LEADING_NEWLINE and (element.text or "").startswith("\n"):
        text = text[1:]
    return text


def caption_before(block: Any, art: Any) -> str:
    """The text a browser shows in `block` before the `art` element, on one line (a caption)."""
    out: list[str] = []
    _collect(_element(block), out, _element(art))
    return " ".join("".join(out).split())
