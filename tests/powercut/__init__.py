"""Power cuts through the real file system calls: a FUSE file system that can forget.

``fs`` serves a backing folder and keeps every write since a file's last ``fsync`` apart, so
that a cut can drop them (or keep a prefix torn at sector size); ``harness`` runs the real
``localpay simulate --trace`` on it, cuts at a chosen write, and checks the ledger as the
terminal finds it at boot, on a set-up home and on a first boot. ``config_apply`` and
``sync_state`` cut a signed config install and the sync client's state save the same way;
``weak_sync`` runs the negative controls (``synchronous=NORMAL``/``OFF``, no directory
fsync) that the same checks must catch.
"""
