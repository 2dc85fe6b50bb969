"""csrl.utils: small helpers shared by the subpackages (atomic, fsync'ed file writes in :mod:`csrl.utils.io`)."""
