# ruff: noqa: RUF001
"""Find the text a person actually wrote in a reply: quoted history and signature removed.

The order follows what helpdesks learned the hard way (osTicket, Zammad, talon):

1. A configured separator line ("-- reply above this line --", osTicket's `reply_separator`): everything
   from the line that contains it is history. The attribution line a client puts right above the quote
   ("On ..., X wrote:") is removed with it.
2. Attribution lines ("On <date>, <name> wrote:" and its equivalents), from per-language tables
   (`ATTRIBUTIONS`): English, German, French, Spanish, Italian, Portuguese, Dutch, Swedish, Norwegian,
   Danish, Finnish, Polish, Czech, Slovak, Hungarian, Turkish, Russian, Ukrainian, Japanese, Chinese and
   Korean, with ASCII or full-width colons, also when a client wrapped them over two or three lines
   (`Le 4 janv. 2016 19:03, "Name"` / `<address>` / `a écrit :`), without the colon, or framed in
   dashes (Zoho). A bare `<name> wrote:` counts only right above a `>` quote. An attribution followed
   by a `>` quote and then more unquoted text introduces an inline or bottom-posted reply: it is not cut.
3. "-----Original Message-----" lines and their translations; quoted header blocks (Outlook, Exchange,
   Notes, GMX/Web.de, Foxmail, Naver: a From line with at least two of Sent/Date, To, Subject, Cc within a
   few lines, in the languages of `HEADER_LABELS`), with the "______" rule Outlook draws above them.
4. "Sent from my iPhone" style lines (`MOBILE_LINES`): mobile clients put the (unquoted) history
   below them.
5. A trailing block of `>`-quoted lines (interleaved answers between quotes are kept).
6. A signature after the RFC 3676 section 4.3 delimiter "-- " (also "--", which many clients trim).

Forwarded mail keeps its forwarded content: a forward marker ("---------- Forwarded message ---------",
"Begin forwarded message:", their translations) above the first history marker, or a forward prefix on
the subject (`Fwd:`, `WG:`, `TR:`, ...; pass `subject`), makes the whole text the new text.

When cutting would leave nothing (a forward whose header block starts the message), the full text is
returned: a helpdesk must never show an empty message for a non-empty mail.

Cost: every step is a pass over the lines with plain string tests and short anchored patterns on lines
of bounded length; the look-ahead after an attribution is precomputed in one backward pass, so the work is
linear in the input. Only the first `MAX_SCAN_CHARS` characters and `MAX_SCAN_LINES` lines are searched
for history markers (a text of many short lines costs per line, not per character); beyond that a
signature delimiter among those lines and a trailing `>` block of at most `MAX_SCAN_LINES` lines are still
removed, the rest is kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "ATTRIBUTIONS",
    "FORWARD_MARKERS",
    "HEADER_LABELS",
    "MAX_SCAN_CHARS",
    "MAX_SCAN_LINES",
    "MOBILE_LINES",
    "ORIGINAL_MARKERS",
    "extract_new_text",
    "extract_with_verdict",
    "is_forward_subject",
]

MAX_SCAN_CHARS = 512 * 1024
"""Only this many characters at the start of a text are searched for history markers."""

MAX_SCAN_LINES = 3000
"""Only this many lines at the start of a text are searched for history markers."""

_MAX_ATTRIBUTION = 400
_ATTRIBUTION_LINES = 3  # an attribution wrapped by a client spans at most this many lines
_TOP_WORDS = 8  # words above an attribution that make a reply top-posted
_HEADER_WINDOW = 14  # lines after a From line searched for the rest of a header block (blank lines included)

# --- attribution lines, one table per language --------------------------------------------------------
# `ends`: how the attribution ends (before the colon, lower case); `starts`: how it begins;
# `middles`: a verb phrase inside the line when the name comes first ("Name <a@b> schrieb am ...:").
ATTRIBUTIONS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "en": {"starts": ("on ", "at ", "quoting "), "ends": ("wrote", "writes", "said", "wrote the following"),
           "afters": (" wrote ",), "middles": (" wrote on ", " wrote at ")},
    "de": {"starts": ("am ", "zitat von "), "ends": ("schrieb", "geschrieben", "schrieb folgendes"),
           "afters": (" schrieb ",), "middles": (" schrieb am ", " hat am ")},
    "fr": {"starts": ("le ",), "ends": ("a écrit", "a ecrit", "écrit"), "afters": (" a écrit ",),
           "middles": (" a écrit le ",)},
    "es": {"starts": ("el ",), "ends": ("escribió", "escribio"), "middles": (" escribió el ",)},
    "it": {"starts": ("il ", "il giorno "), "ends": ("ha scritto", "scritto"), "middles": (" ha scritto il ",)},
    "pt": {"starts": ("em ", "no dia "), "ends": ("escreveu",), "afters": (" escreveu ",),
           "middles": (" escreveu em ",)},
    "nl": {"starts": ("op ",), "ends": ("schreef", "geschreven", "het volgende geschreven", "het volgende"),
           "afters": (" schreef ",),
           "middles": (" schreef op ",)},
    "sv": {"starts": ("den ",), "ends": ("skrev",), "afters": (" skrev ",), "middles": (" skrev den ",)},
    "no": {"starts": ("den ",), "ends": ("skrev", "skrev følgende"), "afters": (" skrev ",), "middles": ()},
    "da": {"starts": ("den ",), "ends": ("skrev",), "afters": (" skrev ",), "middles": ()},
    "fi": {"starts": (), "ends": ("kirjoitti",), "middles": ()},
    "pl": {"starts": ("w dniu ", "dnia "), "ends": ("napisał", "napisała", "napisał(a)", "napisał/a", "pisze"),
           "middles": ()},
    "cs": {"starts": ("dne ",), "ends": ("napsal", "napsala", "napsal(a)", "napísal", "napísal(a)"), "middles": ()},
    "hu": {"starts": (), "ends": ("írta",), "middles": ()},
    "tr": {"starts": (), "ends": ("yazdı",), "middles": ()},
    "ru": {"starts": ("в ",), "ends": ("написал", "написала", "написал(а)", "пишет"), "afters": (" пишет ",),
           "middles": (" от ",)},
    "uk": {"starts": ("у ", "в "), "ends": ("написав", "написала", "написав(ла)", "пише"), "middles": ()},
    "ja": {"starts": (), "ends": ("のメッセージ", "のメール", "書きました", "さんは書きました", "wrote"),
           "middles": ()},
    "zh": {"starts": ("在 ", "在", "於 "), "ends": ("写道", "寫道", "写到"), "middles": ()},
    "ko": {"starts": (), "ends": ("작성", "님이 작성", "님이 씀", "작성하였습니다"), "middles": ()},
    "el": {"starts": ("στις ", "την "), "ends": ("έγραψε", "έγραψε ο/η"), "middles": ()},
    "he": {"starts": ("ב-", "בתאריך "), "ends": ("כתב", "כתבה", "כתב/ה", "כתב/ה את הדברים הבאים"), "middles": ()},
    "ar": {"starts": ("في ",), "ends": ("كتب", "كتبت"), "middles": ()},
    "ro": {"starts": ("pe ", "în "), "ends": ("a scris",), "middles": ()},
    "id": {"starts": ("pada ",), "ends": ("menulis",), "middles": ()},
    "vi": {"starts": ("vào ",), "ends": ("đã viết",), "middles": ()},
    "th": {"starts": ("เมื่อ ",), "ends": ("เขียนว่า", "เขียน"), "middles": ()},
    "hr": {"starts": ("dana ",), "ends": ("je napisao", "je napisala", "napisao", "napisala", "je napisao/la",
                                          "je napisal(a)", "napisal"), "middles": ()},
    "bg": {"starts": ("на ",), "ends": ("написа",), "middles": ()},
}  # fmt: skip
"""Attribution phrases per language (lower case, without the final colon)."""

# --- quoted header blocks ------------------------------------------------------------------------------
HEADER_LABELS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "en": {"from": ("from",), "date": ("sent", "date"), "to": ("to",), "subject": ("subject",), "cc": ("cc",)},
    "de": {"from": ("von",), "date": ("gesendet", "datum"), "to": ("an",), "subject": ("betreff",),
           "cc": ("kopie",)},
    "fr": {"from": ("de",), "date": ("envoyé", "envoyé le", "date", "envoye", "message du"), "to": ("à", "a", "pour"),
           "subject": ("objet", "sujet"), "cc": ("cc", "copie à")},
    "es": {"from": ("de",), "date": ("enviado", "enviado el", "fecha"), "to": ("para",), "subject": ("asunto",),
           "cc": ("cc", "con copia")},
    "it": {"from": ("da",), "date": ("inviato", "data"), "to": ("a",), "subject": ("oggetto",), "cc": ("cc",)},
    "pt": {"from": ("de",), "date": ("enviado", "enviada em", "enviado em", "data"), "to": ("para",),
           "subject": ("assunto",), "cc": ("cc",)},
    "nl": {"from": ("van",), "date": ("verzonden", "verstuurd", "datum"), "to": ("aan",),
           "subject": ("onderwerp",), "cc": ("cc",)},
    "sv": {"from": ("från",), "date": ("skickat", "datum"), "to": ("till",), "subject": ("ämne",),
           "cc": ("kopia",)},
    "no": {"from": ("fra",), "date": ("sendt", "dato"), "to": ("til",), "subject": ("emne",), "cc": ("kopi",)},
    "da": {"from": ("fra",), "date": ("sendt", "dato"), "to": ("til",), "subject": ("emne",), "cc": ("cc",)},
    "fi": {"from": ("lähettäjä",), "date": ("lähetetty", "päivämäärä"), "to": ("vastaanottaja",),
           "subject": ("aihe",), "cc": ("kopio",)},
    "pl": {"from": ("od",), "date": ("wysłano", "data"), "to": ("do",), "subject": ("temat",), "cc": ("dw",)},
    "cs": {"from": ("od",), "date": ("odesláno", "datum"), "to": ("komu",), "subject": ("předmět",),
           "cc": ("kopie",)},
    "hu": {"from": ("feladó",), "date": ("elküldve", "dátum"), "to": ("címzett",), "subject": ("tárgy",)},
    "tr": {"from": ("kimden",), "date": ("gönderildi", "tarih"), "to": ("kime",), "subject": ("konu",)},
    "ru": {"from": ("от",), "date": ("отправлено", "дата", "отправлено в"), "to": ("кому",), "subject": ("тема",),
           "cc": ("копия",)},
    "uk": {"from": ("від",), "date": ("надіслано", "дата"), "to": ("кому",), "subject": ("тема",),
           "cc": ("копія",)},
    "ja": {"from": ("差出人", "送信者", "送信元"), "date": ("送信日時", "日付", "送信日"), "to": ("宛先", "受信者"),
           "subject": ("件名",), "cc": ("cc",)},
    "zh": {"from": ("发件人", "寄件者", "發件人", "寄件人"),
           "date": ("发送时间", "日期", "寄件日期", "發送時間", "时间"),
           "to": ("收件人", "收件者"), "subject": ("主题", "主旨", "主題"), "cc": ("抄送", "副本")},
    "ko": {"from": ("보낸 사람", "보낸사람", "발신자"), "date": ("보낸 날짜", "날짜", "보낸날짜"),
           "to": ("받는 사람", "받는사람", "수신자"), "subject": ("제목",), "cc": ("참조",)},
    "el": {"from": ("από",), "date": ("στάλθηκε", "ημερομηνία", "εστάλη"), "to": ("προς",), "subject": ("θέμα",),
           "cc": ("κοιν",)},
    "he": {"from": ("מאת",), "date": ("נשלח", "תאריך"), "to": ("אל",), "subject": ("נושא",), "cc": ("עותק",)},
    "ar": {"from": ("من",), "date": ("تم الإرسال", "التاريخ", "أرسل"), "to": ("إلى",), "subject": ("الموضوع",),
           "cc": ("نسخة",)},
    "ro": {"from": ("de la",), "date": ("trimis", "data"), "to": ("către", "catre"), "subject": ("subiect",)},
    "id": {"from": ("dari",), "date": ("dikirim", "tanggal"), "to": ("kepada",), "subject": ("subjek", "perihal")},
    "vi": {"from": ("từ",), "date": ("đã gửi", "ngày"), "to": ("đến", "tới"), "subject": ("chủ đề",)},
    "th": {"from": ("จาก",), "date": ("ส่ง", "วันที่"), "to": ("ถึง",), "subject": ("เรื่อง",)},
    "hr": {"from": ("šalje", "pošiljatelj"), "date": ("poslano", "datum"), "to": ("prima", "primatelj"),
           "subject": ("predmet",)},
    "bg": {"from": ("от",), "date": ("изпратено", "дата"), "to": ("до",), "subject": ("относно", "тема")},
}  # fmt: skip
"""Header labels of quoted header blocks per language (lower case, without the colon), by field kind."""

ORIGINAL_MARKERS: tuple[str, ...] = (
    "original message", "original mail", "original e-mail", "reply message", "ursprüngliche nachricht",
    "ursprüngliche mail", "originalnachricht", "original-nachricht", "message d'origine", "message d’origine",
    "message original", "mail original", "mensaje original", "correo original", "messaggio originale",
    "messaggio originale:", "oorspronkelijk bericht", "origineel bericht", "originele bericht", "mensagem original",
    "originalmeddelande", "ursprungligt meddelande", "opprinnelig melding", "oprindelig meddelelse",
    "oprindelig besked", "originalmelding", "alkuperäinen viesti", "původní zpráva", "pôvodná správa",
    "původní e-mail", "oryginalna wiadomość", "wiadomość oryginalna", "eredeti üzenet", "orijinal mesaj",
    "исходное сообщение", "оригинальное сообщение", "первоначальное сообщение", "оригінальне повідомлення",
    "вихідне повідомлення", "元のメッセージ", "オリジナルメッセージ", "原始邮件", "原始郵件", "原邮件", "原始信件",
    "원본 메시지", "원래 메시지", "원본 메일",
)  # fmt: skip
"""Lines (framed in dashes or not) that start the quoted original in Outlook, Zimbra, QQ and others."""

FORWARD_MARKERS: tuple[str, ...] = (
    "forwarded message", "begin forwarded message", "forwarded message follows", "forwarded mail",
    "weitergeleitete nachricht", "weitergeleitete mail", "anfang der weitergeleiteten nachricht",
    "message transféré", "début du message réexpédié", "début du message transféré", "mensaje reenviado",
    "comienzo del mensaje reenviado", "messaggio inoltrato", "inizio messaggio inoltrato", "doorgestuurd bericht",
    "begin doorgestuurd bericht", "mensagem encaminhada", "início da mensagem reencaminhada",
    "início da mensagem encaminhada", "vidarebefordrat meddelande", "videresendt melding",
    "videresendt meddelelse", "videresendt besked", "välitetty viesti", "przekazana wiadomość",
    "wiadomość przekazana", "přeposlaná zpráva", "preposlaná správa", "továbbított üzenet",
    "iletilen mesaj", "пересылаемое сообщение", "пересланное сообщение", "начало переадресованного сообщения",
    "переслане повідомлення", "転送されたメッセージ", "転送メッセージ", "转发的邮件", "转发邮件", "轉寄郵件",
    "已转发邮件", "전달된 메시지", "전달 메시지", "forwarded by",
)  # fmt: skip
"""Lines that start forwarded content (which stays: the forwarded mail is the request)."""

MOBILE_LINES: Mapping[str, tuple[str, ...]] = {
    "en": ("sent from my ", "sent from ", "sent from outlook", "sent from mail for windows", "sent from yahoo mail",
           "sent from aol", "sent from gmail", "sent from samsung", "sent from the all new aol app",
           "sent from proton", "sent from zoho", "sent from mailspring", "sent from spark", "sent from bluemail",
           "sent from blue mail", "sent from nine", "sent from myMail", "sent from mobile", "sent from a mobile",
           "sent from iphone", "sent from ipad", "sent from android", "sent from galaxy", "sent via ",
           "sent with ", "sent using ", "sent on the go", "get outlook for ", "get outlook mobile",
           "sent from the mail.com", "sent from web.de", "sent from gmx"),
    "de": ("von meinem iphone gesendet", "von meinem ipad gesendet", "von meinem samsung", "von meinem smartphone",
           "von meinem android", "von meinem handy", "von meinem mobiltelefon", "von meinem galaxy",
           "gesendet von meinem", "gesendet von outlook", "gesendet mit ", "gesendet vom ", "gesendet von ",
           "outlook für ios beziehen", "outlook für android beziehen", "holen sie sich outlook für",
           "gesendet von mail für windows", "diese nachricht wurde von meinem"),
    "fr": ("envoyé de mon ", "envoyé depuis ", "envoyé à partir de ", "envoyé avec ", "envoyé par ",
           "obtenir outlook pour ", "télécharger outlook pour ", "téléchargez outlook pour "),
    "es": ("enviado desde mi ", "enviado desde ", "enviado con ", "obtener outlook para ", "descargar outlook para ",
           "enviado a través de "),
    "it": ("inviato da ", "inviato dal mio ", "inviato con ", "scarica outlook per ", "ottieni outlook per "),
    "pt": ("enviado do meu ", "enviado de meu ", "enviado do ", "enviado de ", "enviado via ", "enviado pelo ",
           "obter o outlook para ", "baixe o outlook para ", "obtenha o outlook para "),
    "nl": ("verzonden vanaf mijn ", "verzonden vanaf ", "verzonden met ", "verstuurd vanaf mijn ",
           "verstuurd vanaf ", "verstuurd met ", "download outlook voor ", "outlook voor ios downloaden",
           "outlook voor android downloaden"),
    "sv": ("skickat från min ", "skickat från ", "skickades från min ", "hämta outlook för ", "skickat med "),
    "no": ("sendt fra min ", "sendt fra ", "sendt med ", "få outlook for ", "hent outlook for "),
    "da": ("sendt fra min ", "sendt fra ", "sendt med ", "hent outlook til ", "få outlook til "),
    "fi": ("lähetetty iphonesta", "lähetetty android", "lähetetty laitteesta", "lähetetty ",
           "hanki outlook for "),
    "pl": ("wysłane z mojego ", "wysłane z ", "wysłano z mojego ", "wysłano z ", "pobierz aplikację outlook",
           "uzyskaj aplikację outlook", "wysłane przy użyciu "),
    "cs": ("odesláno z mého ", "odesláno z ", "odesláno ze ", "posláno z mého ", "posláno z ",
           "stáhněte si outlook pro ", "získejte outlook pro "),
    "ru": ("отправлено с моего ", "отправлено с ", "отправлено из ", "отправлено со ", "получить outlook для ",
           "скачайте outlook для ", "отправлено через "),
    "uk": ("надіслано з мого ", "надіслано з ", "відправлено з мого ", "відправлено з ", "отримати outlook для "),
    "ja": ("iphoneから送信", "ipadから送信", "androidから送信", "android から送信", "outlook for ios を入手",
           "outlook for android を入手", "私のiphoneから送信", "送信元:", "iphone から送信", "ipad から送信"),
    "zh": ("发自我的", "發自我的", "从我的", "從我的", "来自我的", "來自我的", "发自网易邮箱", "发自 网易邮箱",
           "发自手机", "發自手機", "发自我的iphone", "获取 outlook for", "獲取 outlook for", "取得 outlook for"),
    "ko": ("내 iphone에서 보냄", "내 ipad에서 보냄", "iphone에서 보냄", "ipad에서 보냄", "갤럭시에서 보냄",
           "galaxy에서 보냄", "내 android에서 보냄", "samsung galaxy 스마트폰에서 보냈습니다", "모바일에서 보냄",
           "ios용 outlook 받기", "android용 outlook 받기"),
}  # fmt: skip
"""Signature lines of mobile and app mail clients per language (lower-case line starts)."""

# Line starts in MOBILE_LINES that are ordinary words too: taken only with a device or app named after them.
_MOBILE_GENERIC = (
    "sent from ", "sent via ", "sent with ", "sent using ", "gesendet mit ", "gesendet vom ", "gesendet von ",
    "envoyé depuis ", "envoyé à partir de ", "envoyé avec ", "envoyé par ", "enviado desde ", "enviado con ",
    "enviado a través de ", "inviato da ", "inviato con ", "enviado do ", "enviado de ", "enviado via ",
    "enviado pelo ", "verzonden vanaf ", "verzonden met ", "verstuurd vanaf ", "verstuurd met ", "skickat från ",
    "skickat med ", "sendt fra ", "sendt med ", "lähetetty ", "wysłane z ", "wysłano z ", "wysłane przy użyciu ",
    "odesláno z ", "odesláno ze ", "posláno z ", "отправлено с ", "отправлено из ", "отправлено со ",
    "отправлено через ", "надіслано з ", "відправлено з ", "从我的", "從我的", "来自我的", "來自我的",
)  # fmt: skip
_DEVICE_WORDS = (
    "iphon", "ipad", "ipod", "android", "samsung", "galaxy", "outlook", "mobile", "phone", "blackberry", "yahoo",
    "gmail", "aol", "proton", "zoho", "spark", "huawei", "xiaomi", "pixel", "windows", "smartphone", "handy",
    "tablet", "appareil", "dispositivo", "телефон", "смартфон", "планшет", "watch", "nokia", "motorola",
    "oneplus", "xperia", "surface", "telefoon", "telefon", "mobil", "móvil", "cellulare", "celular", "手机",
    "手機", "mail.com", "mailspring", "bluemail", "blue mail", "thunderbird", "airmail", "newton", "superhuman",
    "hey.com", "fastmail", "gmx", "web.de", "t-online", "tutanota", "mail app", "mail for", "mail on", "mail pour",
    "mail para", "mail per", "mail voor", "mail för", "mail til",
)  # fmt: skip
_MOBILE_ENDINGS = ("から送信", "发送", "發送", "에서 보냄", "에서 보냈습니다", "에서 보냈습니다.")

_FORWARD_SUBJECT = re.compile(
    r"[ \t]*(?:\[[^\]\n]{0,40}\][ \t]*)?(?:fwd?|fw|wg|tr|rv|enc|doorst|vs|vb|vl|i|pd|przekaż|továbbítás|ileti|"
    r"пересл|пересылка|转发|轉寄|転送|전달|fwd\[\d{1,3}\])[ \t]*[:：]",
    re.IGNORECASE,
)
_REPLY_SUBJECT = re.compile(r"[ \t]*(?:re|aw|sv|antw|odp|ответ|回复|回覆|답장)[ \t]*[:：]", re.IGNORECASE)


def _build_ends() -> tuple[str, ...]:
    ends: list[str] = []
    for table in ATTRIBUTIONS.values():
        for verb in table["ends"]:
            ends.extend((verb + ":", verb + " :"))
    return tuple(sorted(set(ends), key=len, reverse=True))


_ENDS = _build_ends()
_STARTS = tuple(sorted({s for t in ATTRIBUTIONS.values() for s in t["starts"]}, key=len, reverse=True))
_AFTERS = tuple(sorted({a for t in ATTRIBUTIONS.values() for a in t.get("afters", ())}, key=len, reverse=True))
_MIDDLES = tuple(sorted({m for t in ATTRIBUTIONS.values() for m in t["middles"]}, key=len, reverse=True))
_MIDDLE_WORDS = tuple(m.strip() for m in _MIDDLES)
_LABELS: dict[str, str] = {
    label: kind for table in HEADER_LABELS.values() for kind, labels in table.items() for label in labels
}
_MOBILE_STARTS = tuple(sorted({p.lower() for t in MOBILE_LINES.values() for p in t}, key=len, reverse=True))
_MOBILE_STRONG = tuple(p for p in _MOBILE_STARTS if p not in _MOBILE_GENERIC)
_FORWARD = tuple(sorted(FORWARD_MARKERS, key=len, reverse=True))
_ORIGINAL = frozenset(ORIGINAL_MARKERS)
_DIGIT = re.compile(r"\d")
_TIME = re.compile(r"\d{1,2}[:.]\d\d")
_CLOCK = re.compile(r"(?<!\d)\d{1,2}:\d\d(?!\d)")
_YEAR = re.compile(r"(?<!\d)(?:19|20)\d\d(?!\d)")
_RULE_CHARS = frozenset("_-=*~\u2014\u2500")
_BARE_WROTE = re.compile(r"[^\W\d_][\w.'\- ]{0,60}\s(?:wrote|schrieb|a écrit|escribió|ha scritto|schreef|skrev)\s?:$")


def _fold(text: str) -> str:
    """Full-width colons and no-break/ideographic spaces as ASCII (`str.translate` is slower for short lines)."""
    if text.isascii():
        return text
    return text.replace("\uff1a", ":").replace("\u00a0", " ").replace("\u3000", " ")



def is_forward_subject(subject: str) -> bool:
    """Whether a subject starts with a forward prefix (`Fwd:`, `FW:`, `WG:`, `TR:`, `RV:`, ...)."""
    return _FORWARD_SUBJECT.match(subject[:200]) is not None


def _is_attribution(line: str, *, loose: bool = False) -> bool:
    """Whether `line` is an attribution; `loose`: also without a date or address (right above a quote)."""
    text = _fold(line.strip().lower())
    if not text or len(text) > _MAX_ATTRIBUTION or text.startswith(">"):
        return False
    core = text.strip("-\u2013 *").strip()  # Zoho: "---- On <date> <address> wrote ----"; "*On ... wrote:*"
    has_digit = _DIGIT.search(core) is not None
    if core.endswith(">:") and "@" in core and has_digit:
        # "Am 04.06.2024 um 09:00 schrieb Name <a@b>:", "2024年6月3日(月) 10:15 山田 <a@b>:"
        return True
    if not core.endswith(":"):
        if core == text and not core.startswith("on "):
            return False
        core += ":"  # "On Wed, 14 Nov 2018 ... <a@b> wrote" (no colon) and the dashed Zoho form
    if core.endswith(_ENDS):
        # "Here is what the customer wrote:" is prose; an attribution names a date or an address.
        return "@" in core or has_digit or (loose and core.startswith(_STARTS))
    if has_digit and (core.startswith(_STARTS) or core[:1].isdigit()) and any(a in core for a in _AFTERS):
        # "Am 03.06.2024 um 10:00 schrieb Support:", "Op ma 3 jun 2024 om 10:00 schreef Bob:"
        return len(core) <= 250
    if has_digit and any(middle in core for middle in _MIDDLES):
        # "Name <a@b> schrieb am Di., 16. Aug. 2016 um 12:52 Uhr:", "Bob/ACME wrote on 06/03/2024 10:00 AM:"
        return "@" in core or core.count(":") >= 2 or "/" in core
    return False


def _is_mobile_line(stripped: str) -> bool:
    """A device or app signature line; the generic forms ("Sent with ...") only when they name a device or app."""
    if len(stripped) >= 90:
        return False
    lowered = stripped.lower()
    if lowered.startswith(_MOBILE_STARTS):
        generic = lowered.startswith(_MOBILE_GENERIC) and not lowered.startswith(_MOBILE_STRONG)
        if generic and not any(word in lowered for word in _DEVICE_WORDS):
            return False  # "Sent with DHL this morning", "Gesendet von der Zentrale"
        return not lowered.endswith((".", "?", "!")) or (len(lowered) < 60 and "," not in lowered)
    return lowered.endswith(_MOBILE_ENDINGS) and len(lowered) < 40


def _is_original_marker(stripped: str) -> bool:
    text = _fold(stripped).strip("-_=*~ ").strip().rstrip(":").strip().lower()
    return bool(text) and text in _ORIGINAL


def _is_forward_marker(stripped: str) -> bool:
    if len(stripped) > 120:
        return False
    text = _fold(stripped).strip("-_=*~ <>").strip().lower()
    return text.startswith(_FORWARD)


def _header_kind(line: str) -> str | None:
    colon = line.find(":", 0, 42)
    if not line.isascii():
        wide = line.find("\uff1a", 0, 42)
        if wide >= 0 and (colon < 0 or wide < colon):
            colon = wide
    if colon < 0:
        return None
    label = line[:colon]
    if "\t" in label.strip():
        return None
    label = label.replace("\u00a0", " ").strip(" \t*").lower()
    return _LABELS.get(label)


def _is_header_block(lines: list[str], index: int, cache: dict[int, str | None] | None = None) -> bool:
    """True when a quoted header block starts at `index`.

    A From/Sent/Date/To/Subject/Cc line begins at least three distinct kinds (From among them) within a
    few lines. Outlook starts such a block with From:, Hotmail with Date:, GMX/Web.de with Gesendet:.
    `cache` keeps each line's kind, so that a run of header-like lines costs O(1) per line.
    """
    memo: dict[int, str | None] = {} if cache is None else cache

    def kind_of(at: int) -> str | None:
        if at not in memo:
            memo[at] = _header_kind(lines[at])
        return memo[at]

    first = kind_of(index)
    if first is None:
        return False
    kinds = {first}
    seen = 0
    for at in range(index + 1, min(index + _HEADER_WINDOW, len(lines))):
        if not lines[at].strip():
            continue
        seen += 1
        if seen > 7:
            break
        kind = kind_of(at)
        if kind is not None:
            if kind in kinds:
                return False  # a field repeats: a list of "From:" lines, not one header block
            kinds.add(kind)
            if len(kinds) >= 3 and "from" in kinds:
                return True
    return False


def _labelled_lines(lines: list[str], start: int) -> bool:
    """Whether at least three of the next four non-blank lines are `Label: value` lines (short labels)."""
    seen = labelled = 0
    for line in lines[start : start + 10]:
        text = _fold(line.strip())
        if not text:
            continue
        seen += 1
        colon = text.find(":", 0, 32)
        if colon > 0 and " " not in text[:colon].strip().strip("*").replace(" ", "", 2):
            labelled += 1
        if seen == 4:
            break
    return labelled >= 3


def _is_rule(line: str) -> bool:
    text = line.strip()
    return len(text) >= 10 and set(text) <= {"_", "-", "=", "\u2014", "\u2500"}


def _look_ahead(lines: list[str]) -> tuple[list[int], list[int]]:
    """For each index: the next non-blank unquoted line and the next `>`-quoted line at or after it.

    One backward pass, so that the look-ahead after each candidate attribution costs O(1).
    """
    count = len(lines)
    next_plain = [count] * (count + 1)
    next_quote = [count] * (count + 1)
    for index in range(count - 1, -1, -1):
        stripped = lines[index].strip()
        next_plain[index] = next_plain[index + 1] if not stripped or stripped[0] == ">" else index
        next_quote[index] = index if stripped[:1] == ">" else next_quote[index + 1]
    return next_plain, next_quote


def _is_quoted(line: str) -> bool:
    return line.lstrip()[:1] == ">"


def _is_wrapped(quoted: str, line: str) -> bool:
    """Whether `line` continues the sentence of the `>` line above it (a client re-wrapped the quote)."""
    above = quoted.lstrip().lstrip("> ").rstrip()
    text = line.strip()
    return _is_quoted(quoted) and bool(above) and above[-1] not in "?:" and text[:1].islower()


def _quote_then_answer(lines: list[str], start: int, ahead: tuple[list[int], list[int]], top: int) -> bool:
    """True when lines from `start` are a `>` quote followed by more unquoted text (inline/bottom reply).

    `top` counts the words written above the attribution. When the writer top-posted (`top` is
    substantial), unquoted text after the quote is a footer or a disclaimer a server appended, unless
    answers interleave with more quotes (a quoted line that lost its `>` does not count as an answer).
    """
    next_plain, next_quote = ahead
    count = len(lines)
    if start >= count or next_quote[start] >= next_plain[start]:
        return False  # no quote right below: the history is unquoted
    index = next_plain[start]
    if index >= count:
        return False
    stripped = lines[index].strip()
    if (
        lines[index].rstrip() in ("--", "-- ")
        or _is_mobile_line(stripped)
        or _is_original_marker(stripped)
        or _is_attribution(stripped)
    ):
        return False
    if top < _TOP_WORDS:
        return True  # bottom-posted or inline reply
    for _ in range(50):  # bounded: a few re-wrapped quote lines, then the verdict
        following = next_quote[index]
        if following >= count:
            return False  # only a trailing footer after the quote
        wrapped = following == index + 1 and index > 0 and _is_wrapped(lines[index - 1], lines[index])
        if not wrapped:
            return True
        index = next_plain[following]
        if index >= count:
            return False
    return True


def _followed_by_quote(start: int, ahead: tuple[list[int], list[int]]) -> bool:
    """True when the next non-blank line from `start` is `>`-quoted."""
    next_plain, next_quote = ahead
    return start < len(next_plain) - 1 and next_quote[start] < next_plain[start]


def _is_one_line_attribution(stripped: str) -> bool:
    return (stripped[-1] in ":\uff1a-*" or stripped.lower().endswith("wrote")) and _is_attribution(stripped)


def _line_verdicts(stripped: str) -> tuple[bool, bool, bool, bool]:
    """The tests of `_cut_index` that read one (stripped, non-blank) line alone.

    Forward marker, one-line attribution, mobile signature, "Original Message" marker: pure functions of
    the line, so a text that repeats lines pays for each distinct line once.
    """
    return (
        len(stripped) <= 120 and stripped[0] in "-_=*~<Bb" and _is_forward_marker(stripped),
        len(stripped) <= _MAX_ATTRIBUTION and _is_one_line_attribution(stripped),
        len(stripped) < 90 and _is_mobile_line(stripped),
        len(stripped) < 80 and _is_original_marker(stripped),
    )


def _ends_with_colon_soon(lines: list[str], index: int) -> bool:
    """Whether one of the next `_ATTRIBUTION_LINES - 1` lines ends with a colon (a wrapped attribution's end)."""
    return any(line.rstrip()[-1:] in (":", "\uff1a") for line in lines[index + 1 : index + _ATTRIBUTION_LINES])


def _attribution_at(lines: list[str], index: int, stripped: str, one_line: bool | None = None) -> int:
    """How many lines (1-3) an attribution starting at `index` spans, or 0."""
    if _is_one_line_attribution(stripped) if one_line is None else one_line:
        return 1
    if not _ends_with_colon_soon(lines, index):
        return 0
    joined = stripped
    for extra in range(1, _ATTRIBUTION_LINES):
        if index + extra >= len(lines):
            break
        follow = lines[index + extra].strip()
        if not follow or (follow[0] == ">" and follow[:2] not in (">:", ">\uff1a")):
            break
        if len(joined) + len(follow) > _MAX_ATTRIBUTION:
            break
        joined = f"{joined}{follow}" if follow[0] == ">" else f"{joined} {follow}"
        if follow[-1] in ":\uff1a" and _is_attribution(joined):
            lowered = stripped.lower()
            # The first line must look like the start of an attribution, not a sentence of the reply.
            if (
                lowered.startswith(_STARTS)
                or lowered[:1].isdigit()
                or "@" in stripped
                or stripped[:1] in "\"'<"
                or any(middle in lowered for middle in _MIDDLE_WORDS)
                or _DIGIT.search(stripped) is not None
            ):
                return extra + 1
            break
    return 0


def _cut_index(lines: list[str]) -> tuple[int | None, bool]:
    """Index of the first line of quoted history (or None), and whether forwarded content starts there.

    Cheap tests on the first and last character and on the length run first, so that ordinary lines cost
    almost nothing.
    """
    ahead = _look_ahead(lines)
    header_kinds: dict[int, str | None] = {}
    verdicts: dict[str, tuple[bool, bool, bool, bool]] = {}
    top = 0
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped[0] == ">":
            continue
        found = verdicts.get(stripped)
        if found is None:
            found = verdicts[stripped] = _line_verdicts(stripped)
        forward, one_line, mobile, original = found
        if forward:
            return index, True
        span = _attribution_at(lines, index, stripped, one_line) if len(stripped) <= _MAX_ATTRIBUTION else 0
        if span and not _quote_then_answer(lines, index + span, ahead, top):
            return index, False
        if (
            not span
            and stripped[-1] in ":\uff1a"
            and len(stripped) <= 80
            and (
                _BARE_WROTE.match(_fold(stripped.lower())) is not None
                or _is_attribution(stripped, loose=True)
            )
            and _followed_by_quote(index + 1, ahead)
            and not _quote_then_answer(lines, index + 1, ahead, top)
        ):
            return index, False  # "Bob Smith wrote:" right above a quote
        if mobile:
            return index, False  # "Sent from my iPhone": mobile clients put the unquoted history below it
        if original:
            return index, False
        if stripped[0] == "_" and len(stripped) >= 20 and set(stripped) == {"_"} and _labelled_lines(lines, index + 1):
            return index, False  # Outlook's rule above a header block in a language without a table
        if (":" in stripped or "\uff1a" in stripped) and _is_header_block(lines, index, header_kinds):
            if index > 0 and _is_rule(lines[index - 1]):
                return index - 1, False
            if index > 1 and not lines[index - 1].strip() and _is_rule(lines[index - 2]):
                return index - 2, False
            if index > 0 and _is_original_marker(lines[index - 1].strip()):
                return index - 1, False
            return index, False
        top += stripped.count(" ") + 1
    return None, False


def _strip_trailing_quote(lines: list[str]) -> list[str]:
    """Remove a trailing `>` block, and the attribution right above it in a language without a table.

    That attribution is a line ending with a colon that names an address (`<a@b>`) or a time
    (`10:00`); a Gmail line wrapped inside the address (`... Name <` / `a@b>:`) goes whole.
    """
    end = len(lines)
    while end and (lines[end - 1].lstrip().startswith(">") or not lines[end - 1].strip()):
        end -= 1
    if end == len(lines) or not end:
        return lines[:end]
    last = _fold(lines[end - 1].strip())
    named = ("@" in last and ">" in last) or _CLOCK.search(last) is not None
    named = named or (_TIME.search(last) is not None and _YEAR.search(last) is not None)
    if last.endswith(":") and len(last) <= _MAX_ATTRIBUTION and named:
        if "@" in last and "<" not in last and end > 1 and lines[end - 2].rstrip().endswith("<"):
            end -= 1
        end -= 1
    return lines[:end]


def _strip_signature(lines: list[str]) -> list[str]:
    index = _signature_line(lines)
    if index is not None:
        return lines[:index]
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    if end and _is_mobile_line(lines[end - 1].strip()):
        return lines[: end - 1]
    return lines


def _signature_line(lines: list[str]) -> int | None:
    """Index of the first signature delimiter line ("-- ", "--"), or `None`."""
    for index, line in enumerate(lines):
        if (line in ("-- ", "--", "\u2014 ") or line.rstrip() == "-- ") and (index > 0 or len(lines) > 1):
            return index
    return None


def _trailing_quote_start(text: str) -> int:
    """Offset where a trailing block of `>`-quoted and blank lines begins (scanning back from the end).

    At most `MAX_SCAN_LINES` lines are read back; a longer block is cut where the scan stopped.
    """
    end = len(text)
    for _ in range(MAX_SCAN_LINES):
        if end <= 0:
            return 0
        start = text.rfind("\n", 0, end - 1) + 1 if end > 1 else 0
        stripped = text[start:end].strip()
        if stripped and not stripped.startswith(">"):
            return end
        if start == 0:
            return 0
        end = start
    return end


def _clean_result(lines: list[str], original: str) -> str:
    lines = _strip_trailing_quote(lines)
    lines = _strip_signature(lines)
    while lines and (not lines[-1].strip() or set(lines[-1].strip()) <= _RULE_CHARS):
        lines = lines[:-1]  # the "====" or "______" a client drew above the history
    result = "\n".join(lines).strip().rstrip()
    if not result.strip():
        return original.strip("\n").rstrip()
    return result


def extract_new_text(text: str, separator: str | None = None, *, subject: str = "") -> str:
    """The new text of a reply (see the module docstring); `text` itself when nothing would remain.

    Args:
        text: The plain text of the message.
        separator: A configured "reply above this line" separator, if any.
        subject: The message's subject: a forward prefix (`Fwd:`, `WG:`, ...) keeps the quoted content.
    """
    return extract_with_verdict(text, separator, subject=subject)[0]


def extract_with_verdict(text: str, separator: str | None = None, *, subject: str = "") -> tuple[str, bool]:
    """`extract_new_text`, and whether a history marker in the text decided it.

    The markers: a separator, an attribution, a header block, an "Original Message" line, a mobile
    signature or a forward marker; not only the trailing `>` block and signature rules.
    """
    if not text:
        return "", False
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    head = text if len(text) <= MAX_SCAN_CHARS else text[: text.rfind("\n", 0, MAX_SCAN_CHARS) + 1]
    lines = head.split("\n", MAX_SCAN_LINES)
    partial = len(head) < len(text)
    if len(lines) > MAX_SCAN_LINES:
        lines.pop()  # the unsplit rest
        partial = True
    if separator:
        for index, line in enumerate(lines):
            if separator in line:
                lines = lines[:index]
                while lines and not lines[-1].strip():
                    lines.pop()
                if lines and (_is_attribution(lines[-1]) or _is_rule(lines[-1])):
                    lines.pop()
                return _clean_result(lines, text), True
    cut, forward = _cut_index(lines)
    if cut is not None and (forward or (is_forward_subject(subject) and not _REPLY_SUBJECT.match(subject))):
        return text.strip("\n").rstrip(), True  # forwarded content is the request
    if cut is not None:
        return _clean_result(lines[:cut], text), True
    if partial:
        # Too long to search further: keep it, less a signature among the lines read and a trailing quote block.
        signature = _signature_line(lines)
        if signature is not None:
            return _clean_result(lines[:signature], text), False
        rest = text[: _trailing_quote_start(text)]
        return rest.strip("\n").rstrip() or text.strip("\n").rstrip(), False
    return _clean_result(lines, text), False
