/* fsutil.h - small file-system helpers shared by the embedded engines. */
#ifndef PULSE_CORE_FSUTIL_H
#define PULSE_CORE_FSUTIL_H

/* Creates dir and its missing parents (mode 0750). 0, or -1 with errno set. */
int fs_mkdir_p(const char *dir);

#endif
