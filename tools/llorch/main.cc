// llorch: the local command line. `llorch --help` lists the subcommands,
// `llorch SUBCOMMAND --help` the flags of one; each subcommand is a
// <name>_command.cc. Errors: one line on stderr, exit code 2.
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "common/cli/flags.h"
#include "common/memory/heap_reuse.h"
#include "common/memory/library_pages.h"
#include "tools/llorch/common.h"

int main(int argc, char** argv) {
  namespace tool = llorch::tool;
  // Before any thread starts: the libraries' startup pages, ~100 MiB.
  (void)llorch::memory::ReleaseLibraryPages();
  // A step's activations stay in the heap between ops instead of faulting in
  // anew (heap_reuse.h); advice only, as the pages above.
  (void)llorch::memory::KeepLargeBlocksInHeap();
  try {
    const std::vector<llorch::cli::Subcommand> subcommands = {
        tool::RunCommand(),      tool::ScoreCommand(),      tool::BenchCommand(),
        tool::GenerateCommand(), tool::BenchServeCommand(), tool::ConvertCommand(),
        tool::InspectCommand(),  tool::TokenizeCommand(),  tool::ModelsCommand(),
        tool::WorkersCommand(),  tool::CancelCommand(),    tool::HealthCommand(),
        tool::SoakCommand()};
    // `llorch cancel JOB_ID`: the id as a bare argument.
    const std::vector<std::string> args = tool::BareArgumentAsFlag(
        std::vector<std::string>(argv + 1, argv + argc), "cancel", "job_id");
    const int exit_code = llorch::cli::DispatchSubcommand("llorch", subcommands, args);
    return llorch::memory::ExitSkippingLibraryDestructors(exit_code);
  } catch (const std::exception& e) {
    // libtorch reports allocation failures and the like by exception.
    std::string message = e.what();
    message = message.substr(0, message.find('\n'));
    std::cerr << "llorch: internal error: " << message << "\n";
    return 2;
  }
}
