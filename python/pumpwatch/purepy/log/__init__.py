"""The segment log in plain Python: the reference implementation of docs/FORMAT.md.

One module per job, named like the Rust module that does the same job (`rust/core/src/log/`,
`rust/core/src/record.rs`); each depends only on those before it:

    record    trade, marker and quarantine payloads: encoding and decoding
    segment   segment file names, the 64-byte header and its seal, file I/O helpers
    scan      `FrameWalk`, the one frame walker every read of the log goes through
    index     the sparse time index (`.pwidx`) and the blocks it is built from
    compress  compressed sealed segments (`.pwzst`)
    hold      what the writer keeps in memory while the disk refuses records
    writer    the active segment: reservation, appends, sealing, recovery on open
    reader    every record readers can see, through the index
    verify    the read-only walk `pumpwatch verify` reports from

The layout of a data directory:

    <dir>/LOCK                    flock of the one writer, holding "pid <n>"
    <dir>/log/<seq:020>.pwlog     segments: 64-byte header, then frames `len u32 | crc32c u32 | payload`
    <dir>/log/<seq:020>.pwidx     sparse time index of a segment, one entry per ~64 KiB block
    <dir>/log/<seq:020>.pwzst     a sealed segment compressed: one zstd frame per index block
    <dir>/recovered/              bytes cut off a torn tail, kept for forensics

The `Store` facade over it is `pumpwatch.purepy.store`.
"""
