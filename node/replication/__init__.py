"""Replication: replica state and ISR, the high watermark, acks=all purgatory, follower fetching
and truncation by leader epoch (issue 3). Sans-IO like the rest of the broker core."""
