"""csrl.utils: small helpers shared by the subpackages (atomic, fsync'ed writes in :mod:`csrl.utils.io`)."""
