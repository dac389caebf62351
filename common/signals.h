// Termination signals of the daemons (paged-store, paged, paged-worker):
// SIGTERM and SIGINT are blocked in every thread and taken synchronously,
// so a shutdown runs on a thread of the program's choosing.
#pragma once

namespace paged {

// Blocks SIGTERM/SIGINT in the calling thread; call it before any thread
// starts so that every thread inherits the mask.
void BlockTerminationSignals();
// Waits until SIGTERM or SIGINT arrives (they must be blocked); returns it.
int WaitForTerminationSignal();
// True when SIGTERM or SIGINT is pending (blocked and not yet taken): long
// work such as a model load checks it to stop early.
bool TerminationPending();

}  // namespace paged
