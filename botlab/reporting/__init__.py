"""The reporter's work, in one package: what a digest says and when it goes out, and what a reply changes.

  digest.py    collect_facts reads the store, render makes the text, HTML and short forms (chart.py draws the chart)
  feedback.py  a stored reply applied: curriculum directives, /status and /ask answered
  service.py   Reporter: builds, stores and sends digests through the channels, reads and answers replies, and
               keeps their schedule (when a digest and a poll are due; in the daemon as jobs of botlab/schedule.py)
  cli.py       `botlab digest`, `botlab feedback` and `botlab inbox`

The channels that carry messages (console, email over SMTP/IMAP, Nostr) are in botlab.notifiers; the reporter's
model (the narrative agent and the reading of plain words) in botlab.agents.reporter. Nothing here is imported by
this file, so `botlab status` can read one helper without loading the rest.
"""
