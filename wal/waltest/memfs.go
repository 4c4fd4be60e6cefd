package waltest

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/commitd/commitd/wal"
)

// ErrCrashed is returned by every operation on a MemFS after Crash.
var ErrCrashed = errors.New("waltest: file system crashed")

// ErrNoSpace is the error a full disk returns; inject it to test ENOSPC.
var ErrNoSpace error = syscall.ENOSPC

// OpKind names a file system operation, for error injection.
type OpKind uint8

// The operations a hook sees.
const (
	OpCreate OpKind = iota + 1
	OpOpen
	OpRead
	OpWrite
	OpSync
	OpRename
	OpRemove
	OpReadDir
	OpSyncDir
	OpMkdir
)

var opNames = [...]string{"?", "create", "open", "read", "write", "sync", "rename", "remove", "readdir", "syncdir", "mkdir"}

func (k OpKind) String() string {
	if int(k) < len(opNames) {
		return opNames[k]
	}
	return fmt.Sprintf("OpKind(%d)", k)
}

// Op is an operation about to be performed.
type Op struct {
	Kind OpKind
	Path string // for Rename, the old path
}

// MemFS is an in-memory wal.FS that can crash. It keeps, per file, what is
// synced and what is not, and per directory, which names are durable (as of
// the last SyncDir). Crash returns what a machine would find after losing
// power: only durable names, only synced data, plus possibly a torn part of
// each file's unsynced writes.
//
// Create replaces any existing file under the name with a new, empty one.
// All methods are safe for concurrent use.
type MemFS struct {
	mu struct {
		sync.Mutex
		cur     map[string]*inode // names as the running system sees them
		durable map[string]*inode // names that survive a crash
		dirs    map[string]bool
		hook    func(Op) error
		crashed bool
	}
}

// inode is a file's contents. Guarded by MemFS.mu.
type inode struct {
	data     []byte  // current contents
	synced   []byte  // contents as of the last Sync
	unsynced []write // writes since the last Sync, oldest first
}

type write struct {
	off  int64
	data []byte
}

// NewMemFS returns an empty MemFS.
func NewMemFS() *MemFS {
	fs := &MemFS{}
	fs.mu.cur = map[string]*inode{}
	fs.mu.durable = map[string]*inode{}
	fs.mu.dirs = map[string]bool{"/": true, ".": true}
	return fs
}

// Inject installs a hook called before every operation, from the goroutine
// doing it, without fs locked: the hook may block, call into fs, or Crash
// it (the operation then fails with ErrCrashed). A non-nil result fails the
// operation with that error, wrapped in an *fs.PathError, and the operation
// has no effect. Hooks run concurrently when operations do. nil removes the
// hook.
func (fs *MemFS) Inject(hook func(Op) error) {
	fs.mu.Lock()
	fs.mu.hook = hook
	fs.mu.Unlock()
}

// FailNth returns a hook that fails the nth (from 1) operation of kind k
// with err, and every later one too if sticky.
func FailNth(k OpKind, nth int, err error, sticky bool) func(Op) error {
	var mu sync.Mutex
	seen := 0
	return func(op Op) error {
		if op.Kind != k {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		seen++
		if seen == nth || (sticky && seen > nth) {
			return err
		}
		return nil
	}
}

// begin runs the hook and checks for a crash. fs.mu must be held; it is
// released while the hook runs, so the hook may block or call into fs
// (even Crash it). Callers look at fs state only after begin.
func (fs *MemFS) begin(k OpKind, path string) error {
	if h := fs.mu.hook; h != nil && !fs.mu.crashed {
		fs.mu.Unlock()
		err := h(Op{k, path})
		fs.mu.Lock()
		if err != nil && !fs.mu.crashed {
			return &iofs.PathError{Op: k.String(), Path: path, Err: err}
		}
	}
	if fs.mu.crashed {
		return &iofs.PathError{Op: k.String(), Path: path, Err: ErrCrashed}
	}
	return nil
}

// Crash freezes fs — every later operation on it, and on files opened from
// it, fails with ErrCrashed — and returns a new MemFS holding what survives:
// the durable names, each file's synced contents and, chosen with rng, a
// prefix of its unsynced writes (in order), possibly ending in a torn part
// of one write followed by garbage. A nil rng keeps only synced data.
func (fs *MemFS) Crash(rng *rand.Rand) *MemFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.mu.crashed = true
	n := NewMemFS()
	for d := range fs.mu.dirs {
		n.mu.dirs[d] = true
	}
	names := make([]string, 0, len(fs.mu.durable))
	for name := range fs.mu.durable {
		names = append(names, name)
	}
	slices.Sort(names) // deterministic use of rng
	clones := map[*inode]*inode{}
	for _, name := range names {
		ino := fs.mu.durable[name]
		c, ok := clones[ino]
		if !ok {
			c = &inode{data: survivors(ino, rng)}
			c.synced = slices.Clone(c.data)
			clones[ino] = c
		}
		n.mu.cur[name], n.mu.durable[name] = c, c
	}
	return n
}

// survivors returns the contents of ino after a crash.
func survivors(ino *inode, rng *rand.Rand) []byte {
	data := slices.Clone(ino.synced)
	if len(ino.unsynced) == 0 || rng == nil {
		return data
	}
	k := rng.IntN(len(ino.unsynced) + 1)
	for _, w := range ino.unsynced[:k] {
		data = writeAt(data, w.data, w.off)
	}
	if k < len(ino.unsynced) {
		w := ino.unsynced[k]
		part := rng.IntN(len(w.data) + 1)
		data = writeAt(data, w.data[:part], w.off)
		if rest := len(w.data) - part; rest > 0 && rng.IntN(2) == 0 {
			junk := make([]byte, 1+rng.IntN(min(rest, 64)))
			for i := range junk {
				junk[i] = byte(rng.Uint32())
			}
			data = writeAt(data, junk, w.off+int64(part))
		}
	}
	return data
}

// writeAt writes p into b at off, growing b (with zeroes) as needed.
func writeAt(b, p []byte, off int64) []byte {
	if end := int(off) + len(p); end > len(b) {
		b = append(b, make([]byte, end-len(b))...)
	}
	copy(b[off:], p)
	return b
}

// MkdirAll implements wal.FS.
func (fs *MemFS) MkdirAll(dir string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir = filepath.Clean(dir)
	if err := fs.begin(OpMkdir, dir); err != nil {
		return err
	}
	for d := dir; !fs.mu.dirs[d]; d = filepath.Dir(d) {
		fs.mu.dirs[d] = true
	}
	return nil
}

// ReadDir implements wal.FS.
func (fs *MemFS) ReadDir(dir string) ([]string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir = filepath.Clean(dir)
	if err := fs.begin(OpReadDir, dir); err != nil {
		return nil, err
	}
	if !fs.mu.dirs[dir] {
		return nil, &iofs.PathError{Op: "readdir", Path: dir, Err: iofs.ErrNotExist}
	}
	var names []string
	for name := range fs.mu.cur {
		if filepath.Dir(name) == dir {
			names = append(names, filepath.Base(name))
		}
	}
	slices.Sort(names)
	return names, nil
}

// Create implements wal.FS.
func (fs *MemFS) Create(name string) (wal.File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = filepath.Clean(name)
	if err := fs.begin(OpCreate, name); err != nil {
		return nil, err
	}
	if !fs.mu.dirs[filepath.Dir(name)] {
		return nil, &iofs.PathError{Op: "create", Path: name, Err: iofs.ErrNotExist}
	}
	ino := &inode{}
	fs.mu.cur[name] = ino
	return &memFile{fs: fs, ino: ino, name: name}, nil
}

// Open implements wal.FS.
func (fs *MemFS) Open(name string) (wal.File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = filepath.Clean(name)
	if err := fs.begin(OpOpen, name); err != nil {
		return nil, err
	}
	ino, ok := fs.mu.cur[name]
	if !ok {
		return nil, &iofs.PathError{Op: "open", Path: name, Err: iofs.ErrNotExist}
	}
	return &memFile{fs: fs, ino: ino, name: name}, nil
}

// Rename implements wal.FS.
func (fs *MemFS) Rename(oldname, newname string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	oldname, newname = filepath.Clean(oldname), filepath.Clean(newname)
	if err := fs.begin(OpRename, oldname); err != nil {
		return err
	}
	ino, ok := fs.mu.cur[oldname]
	if !ok {
		return &iofs.PathError{Op: "rename", Path: oldname, Err: iofs.ErrNotExist}
	}
	delete(fs.mu.cur, oldname)
	fs.mu.cur[newname] = ino
	return nil
}

// Remove implements wal.FS.
func (fs *MemFS) Remove(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = filepath.Clean(name)
	if err := fs.begin(OpRemove, name); err != nil {
		return err
	}
	if _, ok := fs.mu.cur[name]; !ok {
		return &iofs.PathError{Op: "remove", Path: name, Err: iofs.ErrNotExist}
	}
	delete(fs.mu.cur, name)
	return nil
}

// SyncDir implements wal.FS: the names in dir become durable as they are.
func (fs *MemFS) SyncDir(dir string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir = filepath.Clean(dir)
	if err := fs.begin(OpSyncDir, dir); err != nil {
		return err
	}
	for name := range fs.mu.durable {
		if filepath.Dir(name) == dir {
			delete(fs.mu.durable, name)
		}
	}
	for name, ino := range fs.mu.cur {
		if filepath.Dir(name) == dir {
			fs.mu.durable[name] = ino
		}
	}
	return nil
}

// ReadFile returns a copy of the current contents of name.
func (fs *MemFS) ReadFile(name string) ([]byte, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	ino, ok := fs.mu.cur[filepath.Clean(name)]
	if !ok {
		return nil, &iofs.PathError{Op: "readfile", Path: name, Err: iofs.ErrNotExist}
	}
	return slices.Clone(ino.data), nil
}

// WriteFile creates (or replaces) name with data, durably: as if written,
// synced and the directory synced. It ignores the hook; for setting up tests.
func (fs *MemFS) WriteFile(name string, data []byte) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = filepath.Clean(name)
	for d := filepath.Dir(name); !fs.mu.dirs[d]; d = filepath.Dir(d) {
		fs.mu.dirs[d] = true
	}
	ino := &inode{data: slices.Clone(data), synced: slices.Clone(data)}
	fs.mu.cur[name], fs.mu.durable[name] = ino, ino
}

// Files returns the names (full paths) of all files, sorted.
func (fs *MemFS) Files() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var names []string
	for name := range fs.mu.cur {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// TotalBytes returns the summed size of all files whose name has suffix.
func (fs *MemFS) TotalBytes(suffix string) int64 {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var n int64
	for name, ino := range fs.mu.cur {
		if strings.HasSuffix(name, suffix) {
			n += int64(len(ino.data))
		}
	}
	return n
}

// memFile is an open file of a MemFS. Its own state (closed) is guarded by
// fs.mu, like the inode.
type memFile struct {
	fs     *MemFS
	ino    *inode
	name   string // last known name
	closed bool
}

func (f *memFile) begin(k OpKind) error {
	if f.closed {
		return &iofs.PathError{Op: k.String(), Path: f.name, Err: iofs.ErrClosed}
	}
	if err := f.fs.begin(k, f.path()); err != nil {
		return err
	}
	if f.closed { // closed while the hook ran
		return &iofs.PathError{Op: k.String(), Path: f.name, Err: iofs.ErrClosed}
	}
	return nil
}

// path is the file's current name (it may have been renamed since it was
// opened), or its name at open if it has none. fs.mu must be held.
func (f *memFile) path() string {
	if f.fs.mu.cur[f.name] == f.ino {
		return f.name
	}
	for name, ino := range f.fs.mu.cur {
		if ino == f.ino {
			f.name = name
			return name
		}
	}
	return f.name
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.begin(OpRead); err != nil {
		return 0, err
	}
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.begin(OpWrite); err != nil {
		return 0, err
	}
	f.ino.data = writeAt(f.ino.data, p, off)
	f.ino.unsynced = append(f.ino.unsynced, write{off, slices.Clone(p)})
	return len(p), nil
}

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, &iofs.PathError{Op: "size", Path: f.name, Err: iofs.ErrClosed}
	}
	return int64(len(f.ino.data)), nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.begin(OpSync); err != nil {
		return err
	}
	for _, w := range f.ino.unsynced {
		f.ino.synced = writeAt(f.ino.synced, w.data, w.off)
	}
	f.ino.unsynced = f.ino.unsynced[:0]
	return nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return &iofs.PathError{Op: "close", Path: f.name, Err: iofs.ErrClosed}
	}
	f.closed = true
	return nil
}

var _ wal.FS = (*MemFS)(nil)
