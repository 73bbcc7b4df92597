"""Calls: one object per call (``call``) that owns its parts (``prompting``, ``dialing``,
``live``, ``flow_runner``, ``press_gate``), the pure key press rules (``rules``), the
dispatcher that feeds each call its events in order (``dispatcher``), and what calls share
(``context``: services and the call log staging; ``state``: the persistable per-call state)."""
