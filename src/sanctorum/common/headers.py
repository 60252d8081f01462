"""The HTTP headers of the web host's mail protocol, shared by the host and its clients."""

CORRELATION_HEADER = "Correlation-ID"
"""The client's routing hint: where the enclave's replies to it are queued."""
MAIL_ID_HEADER = "Mail-ID"
"""The id of the reply in a response."""
ACKNOWLEDGE_HEADER = "Acknowledge-Mail-ID"
"""The last reply id the client received: replies up to it may be dropped."""
