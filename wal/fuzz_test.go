package wal_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
)

// segmentHeader builds a segment header from the documented format.
func segmentHeader(seq uint64, first wal.LSN) []byte {
	h := make([]byte, 32)
	copy(h, "commitdW")
	binary.LittleEndian.PutUint64(h[8:], seq)
	binary.LittleEndian.PutUint64(h[16:], uint64(first))
	binary.LittleEndian.PutUint32(h[24:], 1)
	binary.LittleEndian.PutUint32(h[28:], crc32.Checksum(h[:28], crc32.MakeTable(crc32.Castagnoli)))
	return h
}

// FuzzRecover feeds arbitrary bytes to recovery as a segment file — after a
// valid header, as the whole file, or followed by a second segment so that
// the first is not the last — and to the frame decoder. Nothing may panic,
// Open may only fail with ErrCorrupt, and every record Replay yields must
// sit in a frame whose checksum, computed here from the format
// description, matches.
func FuzzRecover(f *testing.F) {
	for _, n := range []int{0, 1, 5, 30} {
		fs := writeLog(&testing.T{}, n)
		for _, p := range segFiles(fs) {
			data, _ := fs.ReadFile(p)
			f.Add(uint8(0), data[32:])
			f.Add(uint8(1), data)
			f.Add(uint8(2), data[32:])
		}
	}
	f.Add(uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, mode uint8, body []byte) {
		const first = 7
		fs := waltest.NewMemFS()
		file := append(segmentHeader(1, first), body...)
		switch mode % 3 {
		case 1:
			file = body
		case 2:
			// A successor claims the records up to LSN first+2 are in file.
			fs.WriteFile(testDir+"/"+wal.SegmentName(2), segmentHeader(2, first+3))
		}
		fs.WriteFile(testDir+"/"+wal.SegmentName(1), file)

		// The decoder alone.
		if len(body) >= 16 {
			want := wal.LSN(binary.LittleEndian.Uint64(body[8:]))
			if data, size, why := wal.DecodeFrame(body, 1, want); why == "" {
				n := len(data)
				if size != wal.FrameSize(n) || size > len(body) || !bytes.Equal(data, body[16:16+n]) ||
					binary.LittleEndian.Uint32(body) != frameCRC(1, body, n) {
					t.Fatalf("decoder accepted a bad frame: size %d, %d bytes", size, n)
				}
			}
		}

		l, err := wal.Open(testDir, wal.Options{FS: fs, SegmentBytes: wal.MinSegmentBytes})
		if err != nil {
			if !errors.Is(err, wal.ErrCorrupt) {
				t.Fatalf("Open: %v", err)
			}
			return
		}
		defer l.Close()
		st := l.Stats()
		if st.LastLSN == 0 {
			return
		}
		off := 32
		err = l.Replay(st.FirstLSN, func(lsn wal.LSN, data []byte) error {
			if lsn >= first+3 && mode%3 == 2 {
				t.Fatalf("record %d from a segment holding no frames", lsn)
			}
			n := len(data)
			frame := file[off:]
			if binary.LittleEndian.Uint32(frame[4:]) != uint32(n) ||
				binary.LittleEndian.Uint64(frame[8:]) != uint64(lsn) ||
				binary.LittleEndian.Uint32(frame) != frameCRC(1, frame, n) ||
				!bytes.Equal(frame[16:16+n], data) {
				t.Fatalf("LSN %d at offset %d: record does not match a valid frame", lsn, off)
			}
			off += wal.FrameSize(n)
			return nil
		})
		if err != nil {
			t.Fatalf("Replay: %v", err)
		}
	})
}
