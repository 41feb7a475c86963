"""Find the text a person actually wrote in a reply: quoted history and signature removed.

The order follows what helpdesks learned the hard way (osTicket, Zammad, talon):

1. A configured separator line ("-- reply above this line --", osTicket's ``reply_separator``): everything
   from the line that contains it is history. The attribution line a client puts right above the quote
   ("On ..., X wrote:") is removed with it.
2. Attribution lines in common languages ("On <date>, <name> wrote:", "Am ... schrieb ...:",
   "Le ... a écrit :", "El ... escribió:", "Il ... ha scritto:", "Op ... schreef ...:", "Em ... escreveu:",
   "... skrev:", "W dniu ... napisał:", "... написал:", "...のメッセージ:", "...写道:"), with ASCII or
   full-width colons, also when a client wrapped them over two lines, without the colon, or framed in
   dashes (Zoho). An attribution followed by a ``>`` quote and then more unquoted text introduces an inline
   or bottom-posted reply: it is not cut there.
3. "-----Original Message-----" lines and their translations; Outlook header blocks (a ``From:`` line
   followed within a few lines by two of ``Sent:``/``Date:``, ``To:``, ``Subject:``, in several languages),
   with the "______" rule Outlook draws above them.
4. "Sent from my iPhone" style lines: mobile clients put the (unquoted) history below them.
5. A trailing block of ``>``-quoted lines (interleaved answers between quotes are kept).
6. A signature after the RFC 3676 section 4.3 delimiter "-- " (also "--", which many clients trim).

When cutting would leave nothing (a forward whose header block starts the message), the full text is
returned: a helpdesk must never show an empty message for a non-empty mail. Every step is a pass over the
lines with plain string tests (no backtracking regular expressions); the look-ahead after an attribution
stops at the first unquoted line, so the work stays linear.
"""

from __future__ import annotations

import re

__all__ = ["extract_new_text"]

_ATTRIBUTION_VERBS = (
    "wrote:", "wrote :", "writes:", "schrieb:", "schrieb :", "a écrit :", "a écrit:", "a ecrit :", "escribió:",
    "escribio:", "ha scritto:", "schreef:", "schreef :", "escreveu:", "skrev:", "skrev :", "napisał:",
    "napisał(a):", "написал:", "написал(а):", "написала:", "kirjoitti:", "yazdı:", "écrit :", "geschreven:",  # noqa: RUF001
    "のメッセージ:", "のメッセージ：", "書きました:", "書きました：", "写道:", "写道：", "寫道：", "寫道:", "작성:",  # noqa: RUF001
)  # fmt: skip
_ATTRIBUTION_STARTS = (
    "on ", "am ", "le ", "el ", "il ", "op ", "em ", "den ", "w dniu", "в ", "den ", "på ", "dne ", "pe ", "20",
    "19", "<", "'", '"',
)  # fmt: skip
_ORIGINAL = (
    "original message", "ursprüngliche nachricht", "message d'origine", "message d’origine", "mensaje original",  # noqa: RUF001
    "messaggio originale", "oorspronkelijk bericht", "mensagem original", "originalmeddelande",
    "alkuperäinen viesti", "původní zpráva", "oryginalna wiadomość", "исходное сообщение", "元のメッセージ",
    "原始邮件", "reply message",
)  # fmt: skip
_FROM = (
    "from:",
    "von:",
    "de:",
    "de :",
    "da:",
    "van:",
    "från:",
    "fra:",
    "od:",
    "от:",
    "差出人:",
    "发件人:",
    "寄件者:",
    "送信者:",
)
_DATE = (
    "sent:", "date:", "gesendet:", "datum:", "envoyé :", "envoyé:", "date :", "enviado:", "fecha:", "inviato:",
    "data:", "verzonden:", "skickat:", "sendt:", "wysłano:", "отправлено:", "送信日時:", "发送时间:", "日期:",
    "enviada em:", "envoyé le :", "envoyé le:",
)  # fmt: skip
_TO = ("to:", "an:", "à :", "à:", "para:", "a:", "aan:", "till:", "til:", "do:", "кому:", "宛先:", "收件人:")
_SUBJECT = ("subject:", "betreff:", "objet :", "objet:", "asunto:", "oggetto:", "onderwerp:", "assunto:",
            "ämne:", "emne:", "temat:", "тема:", "件名:", "主题:")  # fmt: skip
_MOBILE = (
    "sent from my ", "sent from mail for windows", "get outlook for ", "von meinem iphone gesendet",
    "von meinem ipad gesendet", "envoyé de mon ", "enviado desde mi ", "inviato da ", "verzonden vanaf mijn ",
    "sent from yahoo mail", "sent with protonmail", "sent from samsung", "gesendet von outlook für",
    "gesendet von meinem", "envoyé depuis ",
)  # fmt: skip
_MAX_ATTRIBUTION = 400
_DIGIT = re.compile(r"\d")


def _is_attribution(line: str) -> bool:
    text = line.strip().lower()
    if not text or len(text) > _MAX_ATTRIBUTION or text.startswith(">"):
        return False
    core = text.strip("-\u2013 ").strip()  # Zoho: "---- On <date> <address> wrote ----"
    has_digit = _DIGIT.search(core) is not None
    if core.endswith((">:", ">\uff1a")) and "@" in core and has_digit:
        # "Am 04.06.2024 um 09:00 schrieb Name <a@b>:", "2024年6月3日(月) 10:15 山田 <a@b>:"
        return True
    if not core.endswith((":", "\uff1a")):
        if core == text and not core.startswith("on "):
            return False
        core += ":"  # "On Wed, 14 Nov 2018 ... <a@b> wrote" (no colon) and the dashed Zoho form
    if not core.endswith(_ATTRIBUTION_VERBS):
        return False
    # "Here is what the customer wrote:" is prose; an attribution names a date or an address.
    return core.startswith(_ATTRIBUTION_STARTS) or "@" in core or has_digit


def _is_mobile_line(stripped: str) -> bool:
    return len(stripped) < 80 and not stripped.endswith(".") and stripped.lower().startswith(_MOBILE)


def _quote_then_answer(lines: list[str], start: int) -> bool:
    """True when lines from ``start`` are a ``>`` quote followed by more unquoted text (inline/bottom reply)."""
    saw_quote = False
    for index in range(start, len(lines)):
        stripped = lines[index].strip()
        if not stripped:
            continue
        if stripped.startswith(">"):
            saw_quote = True
            continue
        return saw_quote and lines[index].rstrip() not in ("--", "-- ") and not _is_mobile_line(stripped)
    return False


def _starts_attribution(line: str) -> bool:
    text = line.strip().lower()
    return 0 < len(text) <= _MAX_ATTRIBUTION and text.startswith(_ATTRIBUTION_STARTS) and not text.endswith(":")


def _is_original_marker(line: str) -> bool:
    text = line.strip().strip("-_=* ").strip().lower()
    return bool(text) and len(text) < 60 and text in _ORIGINAL


def _header_line(line: str, names: tuple[str, ...]) -> bool:
    text = line.replace("\u00a0", " ").strip().lstrip("*").lower()
    return text.startswith(names)


def _header_kind(line: str) -> str | None:
    for kind, names in (("from", _FROM), ("date", _DATE), ("to", _TO), ("subject", _SUBJECT)):
        if _header_line(line, names):
            return kind
    return None


def _is_outlook_block(lines: list[str], index: int) -> bool:
    """True when a quoted header block starts at ``index``.

    A From/Sent/Date/To/Subject line begins at least three distinct kinds (From among them) within seven
    lines. Outlook starts such a block with From:, Hotmail/Outlook.com with Date:.
    """
    first = _header_kind(lines[index])
    if first is None:
        return False
    kinds = {first}
    for other in lines[index + 1 : index + 7]:
        kind = _header_kind(other)
        if kind is not None:
            kinds.add(kind)
    return len(kinds) >= 3 and "from" in kinds


def _is_rule(line: str) -> bool:
    text = line.strip()
    return len(text) >= 10 and set(text) <= {"_", "-", "—"}


def _cut_index(lines: list[str]) -> int | None:
    """Index of the first line of quoted history, or None.

    Cheap tests on the last character and length run first, so that ordinary lines cost almost nothing.
    """
    count = len(lines)
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped[0] == ">":
            continue
        if stripped[-1] in ":\uff1a-" or stripped.endswith("wrote"):
            if _is_attribution(stripped) and not _quote_then_answer(lines, index + 1):
                return index
        elif (
            index + 1 < count
            and lines[index + 1].rstrip().endswith((":", "\uff1a"))
            and _starts_attribution(stripped)
            and _is_attribution(stripped + " " + lines[index + 1])
            and not _quote_then_answer(lines, index + 2)
        ):
            return index
        if _is_mobile_line(stripped):
            return index  # "Sent from my iPhone": mobile clients put the unquoted history below it
        if len(stripped) < 80 and _is_original_marker(stripped):
            return index
        if ":" in stripped and _is_outlook_block(lines, index):
            if index > 0 and _is_rule(lines[index - 1]):
                return index - 1
            if index > 1 and not lines[index - 1].strip() and _is_rule(lines[index - 2]):
                return index - 2
            return index
    return None


def _strip_trailing_quote(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    quoted_end = end
    while end and (lines[end - 1].lstrip().startswith(">") or not lines[end - 1].strip()):
        end -= 1
    if end == quoted_end:
        return lines[:end]
    return lines[:end]


def _strip_signature(lines: list[str]) -> list[str]:
    for index, line in enumerate(lines):
        if line in ("-- ", "--") or line.rstrip() == "-- ":
            return lines[:index]
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    if end and lines[end - 1].strip().lower().startswith(_MOBILE) and len(lines[end - 1]) < 80:
        return lines[: end - 1]
    return lines


def extract_new_text(text: str, separator: str | None = None) -> str:
    """The new text of a reply (see the module docstring); ``text`` itself when nothing would remain."""
    if not text:
        return ""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if separator:
        for index, line in enumerate(lines):
            if separator in line:
                lines = lines[:index]
                while lines and not lines[-1].strip():
                    lines.pop()
                if lines and (_is_attribution(lines[-1]) or _is_rule(lines[-1])):
                    lines.pop()
                break
    cut = _cut_index(lines)
    if cut is not None:
        lines = lines[:cut]
    lines = _strip_trailing_quote(lines)
    lines = _strip_signature(lines)
    result = "\n".join(lines).strip("\n").rstrip()
    if not result.strip():
        return text.strip("\n").rstrip()
    return result
