"""The live web dashboard (``wattcast dashboard``, ``wattcast run --dashboard``).

:mod:`~wattcast.dashboard.state` what the page shows, built from the contract's messages;
:mod:`~wattcast.dashboard.follow` the MQTT side and the command;
:mod:`~wattcast.dashboard.server` the web server (standard library, Server-Sent Events);
``static/`` the page, with its chart library vendored (``static/vendor/README.md``).
"""

from wattcast.dashboard.follow import dashboard, subscriptions
from wattcast.dashboard.server import DashboardServer
from wattcast.dashboard.state import DashboardState

__all__ = ["DashboardServer", "DashboardState", "dashboard", "subscriptions"]
