// The dedicated labeling storage account: it holds ONLY the items under labeling (the selector's copies in
// AL_LABELING_CONTAINER), which Label Studio reads as its Azure source storage.
//
// Why shared-key access is on here, and only here: Label Studio's open-source Azure Blob storage signs in
// with an account name and account key only (no SAS, no connection string, no managed identity). The loop's
// own account (storage.bicep) keeps shared keys off; this account is kept apart so that the key reaches
// nothing but copies of the items in labeling, and a lifecycle rule deletes them after retentionDays.
//
// Label Studio runs the storage in proxy mode (presign=false, set by `al labeling setup`): it streams the
// bytes to the labeler's browser itself, so the account needs no CORS rule and no public blob access.
//
// The selector writes the copies with its own managed identity: Storage Blob Data Contributor on the container
// only; no other app has a role here. The account key goes into Key Vault (secret keySecretName) for
// `al labeling setup`, which creates Label Studio's storage connection over its API; it is never an output or an
// app setting.
//
// Network: public endpoint, default action Allow (infra/checkov-baseline.yaml). Its two clients cannot be named
// in a firewall rule: the selector (Flex Consumption without virtual network integration) and Label Studio (a
// Container Apps environment without its own virtual network) reach it from no fixed address, and neither is a
// service the storage firewall trusts.

@description('Storage account name (3-24 lowercase letters and digits).')
param name string
param location string
param tags object = {}

@description('The container the selector copies items into (AL_LABELING_CONTAINER).')
param containerName string

@description('Blobs are deleted this many days after their last modification (labeled or not).')
@minValue(1)
param retentionDays int = 30

@description('Principal (object) id of the selector app\'s identity: Storage Blob Data Contributor on the container.')
param selectorPrincipalId string

@description('The vault the account key is stored in, and the secret\'s name.')
param keyVaultName string
param keySecretName string = 'labeling-storage-key'

@description('Log Analytics workspace the diagnostic settings send to.')
param logAnalyticsWorkspaceId string

@description('Now, for the key secret\'s expiry (a parameter because utcNow() is allowed only there).')
param now string = utcNow()

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: union(tags, { 'al-role': 'labeling' })
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: true // Label Studio's Azure storage authenticates with the account key only (see above)
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // Copies only (the originals stay in the loop's items container): nothing to undelete.
    deleteRetentionPolicy: { enabled: false }
  }
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
  properties: { publicAccess: 'None' }
}

// Audit logs (StorageRead, StorageWrite, StorageDelete: every read Label Studio makes with the key) and metrics.
resource accountMetrics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: account
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    metrics: [
      { category: 'Transaction', enabled: true }
    ]
  }
}

resource blobLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: blobService
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'allLogs', enabled: true }
    ]
  }
}

// Items under labeling expire: a task still open after retentionDays loses its image in Label Studio (the
// item itself stays in the loop's items container; the next selection may pick it again).
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-labeling-items'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: ['${containerName}/']
            }
            actions: {
              baseBlob: {
                delete: { daysAfterModificationGreaterThan: retentionDays }
              }
            }
          }
        }
      ]
    }
  }
}

var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

// Container scope, not the account: the selector may write items here and nothing else on this account.
resource selectorWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: container
  name: guid(container.id, selectorPrincipalId, storageBlobDataContributor)
  properties: {
    principalId: selectorPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// The one storage key any template reads: straight into Key Vault, for `al labeling setup` (which hands it to
// Label Studio's storage connection). Re-written on every provision, so a rotated key1 follows; it expires a year
// after the provision that wrote it (only `al labeling setup`, right after a provision, reads it).
resource keySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: keySecretName
  properties: {
    value: account.listKeys().keys[0].value
    contentType: 'Storage account key of the labeling account (Label Studio source storage)'
    attributes: { exp: dateTimeToEpoch(dateTimeAdd(now, 'P1Y')) }
  }
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output containerName string = container.name
output keySecretName string = keySecret.name
