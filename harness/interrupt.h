/* SIGINT, SIGTERM and SIGHUP during `parabench run`: one line and the signal's exit code.
 *
 * mpirun (Open MPI) answers SIGINT or SIGTERM by sending SIGTERM to every rank. Each rank's
 * handler removes what this process may have had in flight (the temporary files of the
 * atomic writer, rank 0's PATH.lock) and ends the process with 128 + the signal's number;
 * the speaking rank (rank 0) first writes one line:
 *   parabench: interrupted in case 'tp2_sp' (2 of 3); the 1 finished case is saved in
 *   r.json ("complete": false)
 * (no signal named: the ranks see mpirun's SIGTERM whatever the user sent)
 * The results file itself is left as the last save made it (each case is saved as it
 * ends, atomically), so the finished cases are never lost.
 * mpirun itself exits 1 whatever its ranks did; scripts/mpirun.sh maps a SIGINT / SIGTERM
 * it receives to 130 / 143.
 *
 * The handler only calls write(), unlink() and _exit() on text prepared beforehand.
 */
#pragma once

#include <string>
#include <vector>

namespace pb::harness {

// Installs the handlers. `speaker`: this rank writes the line; `remove`: files to unlink.
void install_interrupt_handlers(bool speaker, const std::vector<std::string>& remove);

// What the line says after "interrupted ", set before each phase of the run, e.g.
// "in case 'tp2_sp' (2 of 3); the 1 finished case is saved in r.json (\"complete\": false)".
void set_interrupt_context(const std::string& where);

}  // namespace pb::harness
