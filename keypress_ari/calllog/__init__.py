"""The call log's contract, pure (no I/O): what a call writes (``ops``), the kinds of its
rows and what a key press row says about its outcome (``kinds``), and a call's timeline as
text (``timeline``). The writer (``store.log_writer``), the metrics, the admin API and the
CLI all read rows through these."""
