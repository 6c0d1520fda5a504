"""The requester and subject SDK: clients that sign requests and trust nothing they are
sent unverified, a member's home folder, enrollment, key rotation and certificate renewal.
Its public names are re-exported from `credex`."""
