/* The atomic file writer (see atomic_file.h). */
#include "reference/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "reference/common/error.h"

namespace pb::io {

namespace {

[[noreturn]] void fail(const std::string& path, int err) {
  throw Error("cannot write " + path + ": " + std::strerror(err));
}

// Writes all bytes to fd; returns 0 or the errno of the first failure.
int write_all(int fd, std::string_view bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : ENOSPC;
    done += size_t(n);
  }
  return 0;
}

bool existing_special(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
}

}  // namespace

std::string temp_path(const std::string& path) {
  const std::filesystem::path p(path);
  const std::string name = "." + p.filename().string() + ".tmp." + std::to_string(::getpid());
  return (p.parent_path().empty() ? std::filesystem::path(name) : p.parent_path() / name).string();
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  PB_REQUIRE(!std::filesystem::is_directory(path), "cannot write ", path, ": it is a directory");
  if (existing_special(path)) {  // /dev/null, /dev/full, a FIFO: in place, checked
    const int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) fail(path, errno);
    const int err = write_all(fd, bytes);
    const int closed = ::close(fd) == 0 ? 0 : errno;
    if (err || closed) fail(path, err ? err : closed);
    return;
  }
  const std::string tmp = temp_path(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, errno);
  int err = write_all(fd, bytes);
  if (!err && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  if (!err && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err) {
    ::unlink(tmp.c_str());
    fail(path, err);
  }
}

void check_writable(const std::string& path) {
  PB_REQUIRE(!std::filesystem::is_directory(path), "cannot write ", path, ": it is a directory");
  if (existing_special(path)) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) fail(path, errno);
    ::close(fd);
    return;
  }
  const std::string tmp = temp_path(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, errno);
  ::close(fd);
  ::unlink(tmp.c_str());
}

OutputLock::OutputLock(const std::string& path) : lock_(path + ".lock") {
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = ::open(lock_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
      const std::string pid = std::to_string(::getpid()) + "\n";
      const int err = write_all(fd, pid);
      ::close(fd);
      if (err) {
        ::unlink(lock_.c_str());
        fail(lock_, err);
      }
      return;
    }
    if (errno != EEXIST) fail(lock_, errno);
    long other = 0;
    if (FILE* f = std::fopen(lock_.c_str(), "r")) {
      if (std::fscanf(f, "%ld", &other) != 1) other = 0;
      std::fclose(f);
    }
    PB_REQUIRE(other <= 0 || (::kill(pid_t(other), 0) != 0 && errno == ESRCH), path,
               " is being written by another job (pid ", other, ", ", lock_, ")");
    ::unlink(lock_.c_str());  // stale: its process is gone
  }
  fail(lock_, EEXIST);
}

OutputLock::~OutputLock() { ::unlink(lock_.c_str()); }

}  // namespace pb::io
