"""The operator's web console (``/console/`` on the admin HTTP server): log in with the
admin token, watch live calls and hang up, mute or hold them, search the call log and read a call's
timeline, dry-run a key press, see the dashboard. See ``pages`` and the README."""

from keypress_ari.console.activity import Activity
from keypress_ari.console.live import LiveCalls
from keypress_ari.console.pages import add_console

__all__ = ["Activity", "LiveCalls", "add_console"]
