/* cli.h - the subcommands of the pulse binary. Each returns the exit status. */
#ifndef PULSE_CLI_CLI_H
#define PULSE_CLI_CLI_H

#include "core/config.h"
#include "services/host.h"

int cli_serve(const config *c);
int cli_migrate(const config *c);
int cli_demo(const config *c);
/* Subcommands with positional arguments get those after the command name. */
int cli_events(const config *c, int argc, char **argv);
int cli_dlq(const config *c, int argc, char **argv);
int cli_replay(const config *c, int argc, char **argv);
/* `pulse <service> <verb> [args]`: a service's own command-line verbs. */
int cli_service_command(const config *c, const char *service, int argc, char **argv);

#endif
