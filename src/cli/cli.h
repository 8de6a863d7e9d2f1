/* cli.h - the subcommands of the pulse binary. Each returns the exit status. */
#ifndef PULSE_CLI_CLI_H
#define PULSE_CLI_CLI_H

#include "core/config.h"
#include "services/host.h"

int cli_serve(const config *c);
int cli_migrate(const config *c);
int cli_demo(const config *c);

#endif
