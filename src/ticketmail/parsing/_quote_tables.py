# ruff: noqa: RUF001
"""The tables the reply rules of `ticketmail.parsing.quotes` read.

Attribution phrasings, quoted header labels, "Original Message" and forward markers, mobile signatures,
per language; and what is derived from them once at import (sorted prefixes, label lookups, the patterns
of a few line shapes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["ATTRIBUTIONS", "FORWARD_MARKERS", "HEADER_LABELS", "MOBILE_LINES", "ORIGINAL_MARKERS"]

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
