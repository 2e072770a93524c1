"""The local control plane: pinned binaries, certificates, and the processes that run them."""
