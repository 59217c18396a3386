/* The one way parabench writes a file (results, Markdown, CSV, traces, SVG, safetensors,
 * dumps): never half-written.
 *
 *   regular file (or a new one): the bytes go to a temporary file in the same folder
 *     (".NAME.tmp.PID"), which is flushed, fsync'ed, closed (each step checked) and
 *     renamed over PATH, so PATH holds either its old contents or all the new ones;
 *   anything else that already exists (a character device such as /dev/null or /dev/full,
 *   a FIFO): written in place, every step checked, never replaced by a regular file.
 * A failure (no such folder, no permission, disk full) removes the temporary file and
 * throws pb::Error with one line: "cannot write PATH: REASON".
 */
#pragma once

#include <string>
#include <string_view>

namespace pb::io {

void write_file_atomic(const std::string& path, std::string_view bytes);

// The temporary file write_file_atomic(path, ...) uses in this process (".NAME.tmp.PID" in
// PATH's folder): what to remove if the process ends in the middle of a write.
std::string temp_path(const std::string& path);

// Throws the same one line if a file could not be created in PATH's folder (checked by
// creating and removing a temporary file there), before any work whose result would go
// there.
void check_writable(const std::string& path);

// While alive, PATH.lock holds this process's pid: a second job that would write the same
// PATH throws "PATH is being written by another job (pid N, PATH.lock)" instead of
// interleaving its saves. A lock left by a process that no longer runs on this host is
// taken over. Released (the lock file removed) by the destructor.
class OutputLock {
 public:
  explicit OutputLock(const std::string& path);
  ~OutputLock();
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;
  const std::string& lock_path() const { return lock_; }  // PATH.lock

 private:
  std::string lock_;
};

}  // namespace pb::io
