"""The on-disk artifact format that export/, runtime/ and viz/ all read: manifest, hashing, path confinement,
atomic writes and the one folder swap (`replace_dir`). Imports only runtime.errors."""
