/* `parabench report RESULTS... --html OUT [--md OUT]`: one self-contained page (and its
 * Markdown twin) for one or more results files side by side, and `parabench collectives`
 * files, drawn by scripts/report_page.py (matplotlib; Debian's python3-matplotlib). The
 * files are read first by the strict results reader (results_schema.h), so a malformed one
 * is refused with one line before the script runs; the script runs under /usr/bin/python3
 * (where Debian installs matplotlib), or python3 from PATH where that does not exist.
 */
#pragma once

#include <string>
#include <vector>

namespace pb::harness {

// Writes html (and md when not empty); throws pb::Error (one line) on bad input or when the
// script fails.
void write_report_page(const std::vector<std::string>& files, const std::string& html, const std::string& md);

}  // namespace pb::harness
