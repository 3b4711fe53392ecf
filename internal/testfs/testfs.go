//go:build linux

// Package testfs makes disk trouble for samsa's own tests: a small tmpfs
// that fills up, a directory made read-only under a running process.
// Root ignores file modes, so these use mounts: a test that may not mount
// (not root, or no CAP_SYS_ADMIN) is skipped, saying why.
package testfs

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
)

// Tmpfs mounts a tmpfs of size (as mount(8) takes it: "4m") at dir,
// creating dir, and unmounts it when the test ends.
func Tmpfs(t testing.TB, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mount(t, "tmpfs", dir, "tmpfs", 0, "size="+size)
}

// Resize changes the size of the tmpfs at dir, keeping its files.
func Resize(t testing.TB, dir, size string) {
	t.Helper()
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT, "size="+size); err != nil {
		t.Fatalf("resize the tmpfs at %s to %s: %v", dir, size, err)
	}
}

// ReadOnlyOver mounts an empty read-only file system over dir, as a
// directory made read-only under a running process looks to it: files it
// has open stay as they were, and every file it creates there fails with
// EROFS. (A read-only remount of the directory itself is refused while a
// process has files in it open for writing.) The returned function, or
// the test's end, unmounts it and shows dir as it was again.
func ReadOnlyOver(t testing.TB, dir string) (undo func()) {
	t.Helper()
	return mount(t, "tmpfs", dir, "tmpfs", syscall.MS_RDONLY, "size=64k")
}

func mount(t testing.TB, source, dir, fstype string, flags uintptr, data string) (undo func()) {
	t.Helper()
	err := syscall.Mount(source, dir, fstype, flags, data)
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		t.Skipf("may not mount at %s here (it takes root with CAP_SYS_ADMIN): %v", dir, err)
	}
	if err != nil {
		t.Fatalf("mount %s at %s: %v", source, dir, err)
	}
	// Detached: a process the test leaves behind (a killed child's
	// files are closed, but a store left open is not) must not keep the
	// mount, or the test's temporary directory, from going away.
	var once sync.Once
	undo = func() {
		once.Do(func() {
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
		})
	}
	t.Cleanup(undo)
	return undo
}
