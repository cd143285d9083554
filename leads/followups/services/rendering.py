"""An email of a sequence step as it goes out: templates, tracked links, headers."""

import re
from dataclasses import dataclass
from email import policy as mail_policy
from email.policy import Policy
from html import escape, unescape
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template import Context, Template

from leads.followups import tokens
from leads.followups.models import OutboundEmail
from leads.followups.services.conf import base_url, link

HREF_RE = re.compile(r"""(?i)(\bhref\s*=\s*)(["'])(https?://[^"'<>\s]+)\2""")
BODY_END_RE = re.compile(r"(?i)</body\s*>")


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    links: list[str]
    headers: dict[str, str]


def _track_links(markup: str, *, click_url: str) -> tuple[str, list[str]]:
    links: list[str] = []
    own = base_url() + "/"

    def rewrite(match: re.Match[str]) -> str:
        url = unescape(match[3])
        if url.startswith(own):  # the unsubscribe link stays as it is
            return match[0]
        if url not in links:
            links.append(url)
        tracked = f"{click_url}?{urlencode({'u': url})}"
        return f"{match[1]}{match[2]}{escape(tracked)}{match[2]}"

    return HREF_RE.sub(rewrite, markup), links


def render_email(email: OutboundEmail) -> Rendered:
    """Subject, bodies and headers of one email. Raises TemplateSyntaxError."""
    enrollment = email.enrollment
    lead = enrollment.lead
    step = email.step
    unsubscribe_url = link("unsubscribe", tokens.make_token(tokens.UNSUBSCRIBE, enrollment.pk))
    values = {
        "lead": lead,
        "owner": lead.owner,
        "sequence": enrollment.sequence,
        "step": step,
        "unsubscribe_url": unsubscribe_url,
    }
    subject = Template(step.subject_template).render(Context(values, autoescape=False))
    subject = " ".join(subject.split())  # a header is one line
    text = Template(step.text_template).render(Context(values, autoescape=False))
    html, links = "", []
    if step.html_template.strip():
        html = Template(step.html_template).render(Context(values))
        html, links = _track_links(
            html, click_url=link("click", tokens.make_token(tokens.CLICK, email.pk))
        )
        pixel_url = link("open", tokens.make_token(tokens.OPEN, email.pk))
        pixel = f'<img src="{escape(pixel_url)}" width="1" height="1" alt="">'
        html, found = BODY_END_RE.subn(lambda m: pixel + m[0], html, count=1)
        if not found:
            html += pixel
    unsubscribe_targets = [f"<{unsubscribe_url}>"]
    mailto = settings.FOLLOWUPS_UNSUBSCRIBE_MAILTO
    if mailto:
        token = tokens.make_token(tokens.UNSUBSCRIBE, enrollment.pk)
        unsubscribe_targets.append(f"<mailto:{mailto}?subject={quote('unsubscribe ' + token)}>")
    headers = {
        "Message-ID": email.message_id,
        "List-Unsubscribe": ", ".join(unsubscribe_targets),
        # RFC 8058: the HTTPS URI above takes a POST with this body.
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Auto-Submitted": "auto-generated",
    }
    return Rendered(subject=subject, text=text, html=html, links=links, headers=headers)


class FollowupMessage(EmailMultiAlternatives):
    """Headers folded at RFC 5322's hard limit (998), not the SMTP policy's 78.

    Folding at 78 splits no URL (it has no spaces), so the email package
    encodes List-Unsubscribe as RFC 2047 words (=?utf-8?q?=3Chttps...) once the
    base URL passes about 21 characters, and RFC 2369/8058 readers (Gmail,
    Yahoo one-click unsubscribe) need the bare <URI>."""

    def message(self, *, policy: Policy = mail_policy.default) -> Any:
        return super().message(policy=policy.clone(max_line_length=998))


def build_message(email: OutboundEmail, rendered: Rendered) -> EmailMultiAlternatives:
    message = FollowupMessage(
        subject=rendered.subject,
        body=rendered.text,
        from_email=email.enrollment.sequence.sender or None,
        to=[email.recipient],
        headers=rendered.headers,
    )
    if rendered.html:
        message.attach_alternative(rendered.html, "text/html")
    return message
