"""The admin web page at /ui: keys, users, teams, spend charts and deployment health, served by the proxy itself.

Server-rendered HTML (Jinja templates shipped in this package), inline SVG charts, one small stylesheet and one
small script (only for the copy button): nothing is fetched from elsewhere at run time and nothing needs building.
Reading works without JavaScript. Every change goes through the same admin functions and access rules as the
HTTP admin API (`actions`), and the page never holds a key: sign-in trades it for a signed session cookie
(`session`).
"""

from __future__ import annotations

# Importing the route modules registers their routes on the blueprint.
from edgeproxy.ui import forms, pages, signin, spend
from edgeproxy.ui.web import blueprint

__all__ = ["blueprint", "forms", "pages", "signin", "spend"]
