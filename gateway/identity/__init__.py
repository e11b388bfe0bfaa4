"""Who is calling: sessions (store backends), users and passwords, bearer tokens."""
