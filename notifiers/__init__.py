"""Channels that carry digests out and feedback in; installed as `botlab.notifiers`.

Every channel (console.py, mail.py, nostr.py) has the same small interface, used by botlab.reporting.service.Reporter:
  name                      "console" | "email" | "nostr" (the outbox's channel column)
  news                      an asyncio.Event set when a reply may be waiting (IMAP IDLE push, a Nostr DM)
  async start(listen)       connect; with listen, also watch for replies
  async stop()
  async send(item)          send one outbox item; raise on failure (the outbox retries later)
  async receive()           replies since the stored cursor, as replies.Incoming
  async commit_receive()    the caller stored them: move the cursor
"""
