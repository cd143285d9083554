"""The event browser's saved-views menu, for templates/dashboard/_saved_views.html.

The partial is included by the event browser's page, whose view knows nothing of
saved views; the tag only hands the selector's answer to the template.
"""

from django import template

from orchestrator.dashboard.saved_views import Menu, menu

register = template.Library()


@register.simple_tag(takes_context=True)
def saved_views_menu(context: template.Context) -> Menu:
    request = context["request"]
    return menu(request=request, query=request.GET.urlencode())
