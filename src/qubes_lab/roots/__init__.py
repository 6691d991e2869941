"""The lab's composition roots: the product's programs on the lab's stand-in for QubesDB
(`--store DIR`, one directory per qube on the host)."""
