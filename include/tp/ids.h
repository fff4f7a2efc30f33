/* ids.h: identifiers: random UUIDs (v4) from the kernel's CSPRNG. Any thread. */
#ifndef TP_IDS_H
#define TP_IDS_H

#define TP_UUID_LEN 36

/* Writes a new lowercase UUID v4 ("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx") into out. Returns 0 or TP_EIO. */
int tp_uuid_v4(char out[TP_UUID_LEN + 1]);

#endif
