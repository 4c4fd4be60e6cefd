package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// On-disk layout; wal/doc.go and docs/wal-format.md draw it.
const (
	// segmentHeaderSize is the size of the header at offset 0 of a used
	// segment. A multiple of 8 so that frames start 8-byte aligned.
	segmentHeaderSize = 32
	// frameHeaderSize is the fixed part of a frame: checksum, length, LSN.
	frameHeaderSize = 16
	// formatVersion is stored in every segment header.
	formatVersion uint32 = 1
	// maxFormatRecord is the largest record length the decoder accepts, no
	// matter what Options.MaxRecordBytes says; it bounds what a corrupt
	// length field can make the reader allocate.
	maxFormatRecord = 1 << 30
	// segmentSuffix names used segment files and prepared ones alike.
	segmentSuffix = ".wal"
	// tmpSuffix names a segment being prepared; Open deletes leftovers.
	tmpSuffix = ".wal.tmp"
)

// segmentMagic opens every segment header.
var segmentMagic = [8]byte{'c', 'o', 'm', 'm', 'i', 't', 'd', 'W'}

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	le         = binary.LittleEndian
)

// frameSize is the size on disk of a frame carrying n bytes of data: the
// header, the data and zero padding up to a multiple of 8.
func frameSize(n int) int { return (frameHeaderSize + n + 7) &^ 7 }

// SegmentBytesFor returns the smallest Options.SegmentBytes whose segments
// hold a record of n bytes: the segment header and one frame.
func SegmentBytesFor(n int) int64 { return int64(segmentHeaderSize + frameSize(n)) }

// segmentSeed is the CRC-32C of the segment sequence number. Every frame
// checksum starts from it, so a frame validates only in the segment (file
// incarnation) it was written for: stale frames in a recycled file carry
// another sequence number and never validate.
func segmentSeed(seq uint64) uint32 {
	var b [8]byte
	le.PutUint64(b[:], seq)
	return crc32.Checksum(b[:], castagnoli)
}

// putSegmentHeader encodes a segment header into b[:segmentHeaderSize].
func putSegmentHeader(b []byte, seq uint64, first LSN) {
	_ = b[segmentHeaderSize-1]
	copy(b[0:8], segmentMagic[:])
	le.PutUint64(b[8:16], seq)
	le.PutUint64(b[16:24], uint64(first))
	le.PutUint32(b[24:28], formatVersion)
	le.PutUint32(b[28:32], crc32.Checksum(b[:28], castagnoli))
}

// parseSegmentHeader decodes a segment header; ok is false for anything but
// an intact header of this format version.
func parseSegmentHeader(b []byte) (seq uint64, first LSN, ok bool) {
	if len(b) < segmentHeaderSize || [8]byte(b[0:8]) != segmentMagic ||
		le.Uint32(b[28:32]) != crc32.Checksum(b[:28], castagnoli) ||
		le.Uint32(b[24:28]) != formatVersion {
		return 0, 0, false
	}
	seq, first = le.Uint64(b[8:16]), LSN(le.Uint64(b[16:24]))
	if first == 0 {
		return 0, 0, false
	}
	return seq, first, true
}

// headerWhy says what is wrong with a segment header that parseSegmentHeader
// rejected or that names another sequence number than seq, the file's.
func headerWhy(b []byte, seq uint64) string {
	switch {
	case len(b) < segmentHeaderSize:
		return fmt.Sprintf("file of %d bytes is shorter than a header", len(b))
	case [segmentHeaderSize]byte(b[:segmentHeaderSize]) == [segmentHeaderSize]byte{}:
		return "zeroes"
	case [8]byte(b[0:8]) != segmentMagic:
		return fmt.Sprintf("bad magic %q", b[0:8])
	case le.Uint32(b[28:32]) != crc32.Checksum(b[:28], castagnoli):
		return "checksum mismatch"
	case le.Uint32(b[24:28]) != formatVersion:
		return fmt.Sprintf("format version %d, want %d", le.Uint32(b[24:28]), formatVersion)
	case le.Uint64(b[16:24]) == 0:
		return "first LSN 0"
	}
	return fmt.Sprintf("names segment %d, not %d", le.Uint64(b[8:16]), seq)
}

// putFrameHeader writes the length and LSN of a frame; sealFrame adds the
// checksum once the frame's segment is known.
func putFrameHeader(b []byte, n int, lsn LSN) {
	le.PutUint32(b[4:8], uint32(n))
	le.PutUint64(b[8:16], uint64(lsn))
}

// sealFrame stores the checksum of the frame at the start of b, seeded for
// its segment, and returns the frame's size.
func sealFrame(b []byte, seed uint32) int {
	n := int(le.Uint32(b[4:8]))
	le.PutUint32(b[0:4], crc32.Update(seed, castagnoli, b[4:frameHeaderSize+n]))
	return frameSize(n)
}

// decodeFrame checks the frame at the start of b, which must be the one
// carrying want. On success it returns the record (aliasing b) and the
// frame's size; otherwise why says what is wrong and data is nil.
func decodeFrame(b []byte, seed uint32, want LSN) (data []byte, size int, why string) {
	if len(b) < frameHeaderSize {
		return nil, 0, "segment ends inside a frame header"
	}
	n := le.Uint32(b[4:8])
	lsn := LSN(le.Uint64(b[8:16]))
	if n == 0 && lsn == 0 && le.Uint32(b[0:4]) == 0 {
		return nil, 0, "zeroes (end of written data)"
	}
	if n > maxFormatRecord {
		return nil, 0, fmt.Sprintf("record length %d exceeds the format limit", n)
	}
	size = frameSize(int(n))
	if len(b) < size {
		return nil, 0, fmt.Sprintf("frame of %d bytes overruns the segment", size)
	}
	if le.Uint32(b[0:4]) != crc32.Update(seed, castagnoli, b[4:frameHeaderSize+n]) {
		return nil, 0, "checksum mismatch"
	}
	if lsn != want {
		return nil, 0, fmt.Sprintf("frame has LSN %d, want %d", lsn, want)
	}
	return b[frameHeaderSize : frameHeaderSize+n], size, ""
}

// segmentName is the file name of the segment with sequence number seq.
func segmentName(seq uint64) string { return fmt.Sprintf("%016x%s", seq, segmentSuffix) }

// parseSegmentName returns the sequence number of a segment file name and
// whether it is a temporary (being prepared) file.
func parseSegmentName(name string) (seq uint64, tmp, ok bool) {
	base, isTmp := strings.CutSuffix(name, tmpSuffix)
	if !isTmp {
		var isSeg bool
		if base, isSeg = strings.CutSuffix(name, segmentSuffix); !isSeg {
			return 0, false, false
		}
	}
	if len(base) != 16 {
		return 0, false, false
	}
	seq, err := strconv.ParseUint(base, 16, 64)
	if err != nil {
		return 0, false, false
	}
	return seq, isTmp, true
}
