"""The words, phrases and addresses automatic mail is recognised by, and the matchers over them.

Lower-case literals only; every pattern built from them is an anchored alternation of escaped literals
(linear, no backtracking blow-up). Used by `ticketmail.rules.automatic` and its bounce detection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ticketmail.decision import AutomaticKind, Reason

__all__ = [
    "AUTOREPLY_PREFIX",
    "BOUNCE_BODY",
    "BOUNCE_HINTS",
    "BOUNCE_PREFIX",
    "BOUNCE_SUBJECTS",
    "DELAY_PREFIX",
    "DELAY_SUBJECTS",
    "JMRP_SENDERS",
    "LIST_REJECTIONS",
    "OOF_BODY_PHRASES",
    "OOF_PREFIX",
    "OOF_SUBJECT_PREFIXES",
    "REPORTER_NAMES",
    "SES_SENDERS",
    "SUCCESS_PREFIX",
    "Signals",
    "contains",
    "contains_body",
    "is_reporter_address",
    "subject_prefix",
]

OOF_SUBJECT_PREFIXES: tuple[str, ...] = (
    # Outlook/Exchange "Automatic Replies" (the OOF feature) in its common display languages.
    "automatic reply",
    "automatische antwort",
    "réponse automatique",
    "respuesta automática",
    "risposta automatica",
    "automatisch antwoord",
    "resposta automática",
    "autosvar",
    "automaattinen vastaus",
    "automatická odpověď",
    "odpowiedź automatyczna",
    "automatikus válasz",
    "otomatik yan\u0131t",  # Turkish, dotless i
    "автоматический ответ",
    "自动回复",
    "自動回覆",
    "自動応答",
    "자동 회신",
    # Older Exchange, Notes, Zimbra, Gmail users' own subjects.
    "out of office",
    "out of the office",
    "abwesenheitsnotiz",
    "abwesend",
    "absence",
    "absent",
    "fuori sede",
    "ausente",
    "afwezig",
    "frånvaro",
    "poza biurem",
    "congés",
    "on vacation",
    "vacation reply",
    "away from the office",
    "away from office",
)
"""Subject prefixes (lower case) that mark an out-of-office reply when followed by `:`, `]` or nothing."""

AUTOREPLY_SUBJECT_PREFIXES = (
    "auto-reply",
    "autoreply",
    "auto reply",
    "auto-response",
    "autoresponse",
    "auto response",
    "automatic response",
    "automated response",
    "automated reply",
)

OOF_BODY_PHRASES = (
    "out of the office",
    "out of office",
    "on vacation",
    "on holiday",
    "on leave",
    "annual leave",
    "away from the office",
    "away from my desk until",
    "abwesend",
    "nicht im büro",
    "absent du bureau",
    "en congé",
    "fuera de la oficina",
    "fuori ufficio",
    "afwezig",
)

BOUNCE_SUBJECTS = (
    # English (Postfix, Exim, Sendmail, qmail, Exchange, Gmail, Yahoo, Notes, GroupWise, carriers).
    "undeliverable", "undelivered mail", "undeliverable mail", "undelivered message", "undeliverable message",
    "returned mail", "returned message", "return mail", "mail delivery failed", "mail delivery failure",
    "delivery status notification (failure)", "delivery failure", "delivery failed", "failure notice",
    "failure delivery", "failed mail", "failed delivery", "mail system error", "nondeliverable", "non-deliverable",
    "non-delivery", "non delivery", "delivery notification: delivery has failed", "mail delivery problem",
    "could not send message", "returned to sender", "message not delivered", "could not be delivered",
    "delivery problem", "delivery status notification", "user unknown", "mail could not be delivered",
    "message delivery failure", "delivery report", "notice of delivery failure", "mail not delivered",
    "permanent delivery failure", "email delivery failure", "message you sent blocked", "rejected:",
    "mail failure", "bounced mail", "bounce notification", "delivery notification",
    # Other languages (Exchange, Notes and national providers).
    "unzustellbar", "nicht zustellbar", "unzustellbare", "zustellung fehlgeschlagen", "fehler bei der zustellung",
    "non remis", "non distribuable", "impossible de remettre", "échec de la remise", "echec de la remise",
    "notification d'état de remise", "no se puede entregar", "imposible entregar", "no entregado",
    "error de entrega", "non recapitabile", "impossibile recapitare", "mancato recapito", "onbestelbaar",
    "kan niet worden bezorgd", "niet afgeleverd", "não é possível entregar", "não entregue",
    "não foi possível entregar", "falha na entrega", "olevererbart", "kunde inte levereras", "kan ikke leveres",
    "ikke levert", "kunne ikke leveres", "ikke leveret", "nie można dostarczyć", "niedostarczalne",
    "niedostarczona", "nedoručitelné", "nelze doručit", "nedoručeno", "kézbesíthetetlen", "toimittamaton",
    "teslim edilemedi", "iletilemedi", "недоставлено", "не доставлено", "невозможно доставить",
    "не удалось доставить", "ошибка доставки", "не вдалося доставити", "недоставлене",
    "配信不能", "配送不能", "不達", "配信エラー", "配送エラー", "送信エラー", "宛先不明", "エラーメール",
    "リターンメール", "届きませんでした", "配信できませんでした", "送信できませんでした", "配信失敗",
    "未送达", "无法投递", "退信", "投递失败", "发送失败", "無法傳送", "傳送失敗", "未能送達",
    "전달되지 않음", "배달되지 않음", "전송 실패", "배달 실패", "반송",
)  # fmt: skip
DELAY_SUBJECTS = (
    "delivery status notification (delay)",
    "delivery delayed",
    "delayed mail",
    "warning: message",
    "warning: could not send message",
    "mail delivery delayed",
    "mail delivery warning",
    "delivery delay notification",
    "delivery warning",
    "still being retried",
    "verzögert",
    "zustellung verzögert",
    "remise retardée",
    "entrega retrasada",
    "consegna ritardata",
    "vertraagd",
    "задержка доставки",
    "配信遅延",
)
SUCCESS_SUBJECTS = (
    "delivery status notification (success)",
    "delivery status notification (relay)",
    "successful mail delivery report",
    "delivered:",
    "relayed:",
    "zugestellt:",
    "remis :",
    "remis:",
    "entregado:",
    "recapitato:",
    "bezorgd:",
)
BOUNCE_BODY = (
    "this is the mail system at host",
    "this message was created automatically by mail delivery software",
    "the following message to <",
    "delivery to the following recipient",
    "delivery has failed to these recipients",
    "your message wasn't delivered",
    "your message could not be delivered",
    "could not be delivered to one or more recipients",
    "i'm sorry to have to inform you that your message could not",
    "i'm afraid i wasn't able to deliver your message",
    "there was an error delivering your mail",
    "this is a permanent error",
    "permanent fatal errors",
    "unable to deliver the message",
    "the original message was received at",
    "message delivery to the following",
    "this is the qmail-send program",
    "delivery to the following recipients failed",
    "delivery to the following recipients has been delayed",
)
BOUNCE_HINTS = (
    "could not be delivered", "couldn't be delivered", "was not delivered", "wasn't delivered",
    "delivery attempts", "has been postponed", "non-delivery", "undeliverable", "advisory-only",
    "following recipient", "following address", "following user", "permanent error", "temporary error",
    "user unknown", "unknown user", "recipient address rejected", "mailbox full", "mailbox unavailable",
    "no such user", "does not exist", "5.1.1", "550 ", "smtp", "will continue to try", "retry",
    "nicht zugestellt", "n'a pas pu être remis", "no se pudo entregar", "non è stato recapitato",
)  # fmt: skip
"""Wording of a delivery notice, taken with an anchored bounce subject and failed recipients found in the text."""
SES_SENDERS = ("@sns.amazonaws.com",)
JMRP_SENDERS = frozenset({"staff@hotmail.com", "staff@outlook.com"})
LIST_REJECTIONS = (
    "not member", "not a member of this mailing list", "non-member", "fml system error", "loop alert",
    "loop back warning", "post by non-member", "your message was rejected", "message rejected",
)  # fmt: skip
REPORTER_LOCALS = frozenset(
    {
        "mailer-daemon", "mailer_daemon", "maildaemon", "mail-daemon", "mailerdaemon", "mdaemon", "postmaster",
        "post_master", "post-master", "mail.daemon", "mailer.daemon", "smtp-gateway", "mail-delivery",
        "mail_delivery", "maildelivery", "nobody-bounces",
    }
)  # fmt: skip
REPORTER_NAMES = (
    "mailer-daemon", "mailer daemon", "mail delivery subsystem", "mail delivery system", "postmaster",
    "mail administrator", "mail delivery service", "microsoft outlook", "mail system",
)  # fmt: skip

OOF_BODY_CHARS = 2000


def is_reporter_address(address: str) -> bool:
    """Whether `address` is a mail system's reporting address (`MAILER-DAEMON`, `postmaster`)."""
    local = address.rpartition("@")[0] if "@" in address else address
    return local.strip().strip("<>").lower() in REPORTER_LOCALS


def _prefix_pattern(prefixes: Iterable[str]) -> re.Pattern[str]:
    """One anchored pattern for a list of literal prefixes followed by `:`, `]`, `-` or the end.

    Only escaped literals in one alternation, no nested repetition: linear, no backtracking blow-up.
    """
    choices = "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True))
    return re.compile(
        rf"[\[(]?[ \t]*(?:{choices})[ \t]*(?:[:\uff1a\])\-]|$|autoreply|auto-reply|notification)", re.IGNORECASE
    )


OOF_PREFIX = _prefix_pattern(OOF_SUBJECT_PREFIXES)
AUTOREPLY_PREFIX = _prefix_pattern(AUTOREPLY_SUBJECT_PREFIXES)
BOUNCE_PREFIX = _prefix_pattern(BOUNCE_SUBJECTS)
DELAY_PREFIX = _prefix_pattern(DELAY_SUBJECTS)


def subject_prefix(subject: str, pattern: re.Pattern[str]) -> str | None:
    """The prefix (of `pattern`) that `subject` starts with, or `None`."""
    match = pattern.match(subject.strip()[:300])
    return match.group(0) if match else None


class Signals:
    """Accumulates (kind, reason) pairs while the headers are read."""

    def __init__(self, ignore: frozenset[str] = frozenset()) -> None:
        self.kinds: set[AutomaticKind] = set()
        self.reasons: list[Reason] = []
        self.ignore = ignore  # switched-off signal codes (see SWITCHABLE_SIGNALS)

    def add(self, kind: AutomaticKind, code: str, message: str, value: str | None = None) -> None:
        if code in self.ignore:
            return
        self.kinds.add(kind)
        self.reasons.append(Reason(code=f"auto.{code}", message=message, value=value))


SUCCESS_PREFIX = re.compile(
    "|".join(re.escape(p) for p in sorted(SUCCESS_SUBJECTS, key=len, reverse=True)), re.IGNORECASE
)


def contains(text: str, needles: Iterable[str]) -> str | None:
    lowered = text[:300].lower()
    for needle in needles:
        if needle in lowered:
            return needle
    return None


def contains_body(text: str, phrases: Iterable[str]) -> str | None:
    lowered = text[:OOF_BODY_CHARS].lower()
    for phrase in phrases:
        if phrase in lowered:
            return phrase
    return None
